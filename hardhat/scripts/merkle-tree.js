#!/usr/bin/env node
// Builds OpenZeppelin StandardMerkleTrees with the npm package, for cross-checking chain/merkle.py.
// stdin:  {"types": [...], "values": [[...], ...], "options": {"sortLeaves": true}}   ("options" is optional)
//         or a JSON array of such objects (one node start for many trees).
//         Integers as decimal strings, bytes/bytes32 as 0x-hex strings, addresses as hex strings.
// stdout: {"root": "0x..", "proofs": [[...] for each value index], "dump": tree.dump()}, or an array of those.
// Prints only JSON; errors go to stderr with a non-zero exit code.
'use strict';
const fs = require('fs');
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');

function build({ types, values, options }) {
  const tree = StandardMerkleTree.of(values, types, options || {});
  return {
    root: tree.root,
    proofs: values.map((_, i) => tree.getProof(i)),
    dump: tree.dump(),
  };
}

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const output = Array.isArray(input) ? input.map(build) : build(input);
process.stdout.write(JSON.stringify(output));
