#!/usr/bin/env node
// A `solc`-compatible front for the npm `solc` package (solcjs), so py-solc-x can compile offline.
// py-solc-x calls `<binary> --version` and `<binary> --standard-json [flags]` with the input on stdin;
// the solcjs CLI prints a banner and rejects those flags, so this script answers both forms and prints
// only the JSON. Imports such as "@openzeppelin/..." resolve from this project's node_modules.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

if (process.argv.includes('--version')) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}

const searchRoots = [path.resolve(__dirname, '..', 'node_modules'), path.resolve(__dirname, '..', '..')];

function findImports(importPath) {
  for (const root of searchRoots) {
    const candidate = path.resolve(root, importPath);
    if (candidate.startsWith(root + path.sep) && fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    }
  }
  return { error: `File not found: ${importPath} (searched ${searchRoots.join(', ')})` };
}

const input = fs.readFileSync(0, 'utf8');
process.stdout.write(solc.compile(input, { import: findImports }));
