"""chain.merkle against the npm package itself: same roots, proofs and dumps as @openzeppelin/merkle-tree."""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from chain.merkle import (
    COMMITMENT_LEAF_TYPES,
    RESULT_LEAF_TYPES,
    MerkleError,
    StandardMerkleTree,
    leaf_hash,
    verify_proof,
)

HARDHAT_DIR = Path(__file__).resolve().parents[2] / "hardhat"
SCRIPT = HARDHAT_DIR / "scripts" / "merkle-tree.js"
NPM_PACKAGE = HARDHAT_DIR / "node_modules" / "@openzeppelin" / "merkle-tree"
SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100, 1000)
UNSORTED_SIZES = (1, 3, 7, 100)
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BASE32 = string.ascii_lowercase + "234567"


def _cid(rng: random.Random) -> str:
    """A CIDv0 (46 chars) or CIDv1 base32 (59 chars) lookalike."""
    if rng.random() < 0.5:
        return "Qm" + "".join(rng.choices(BASE58, k=44))
    return "bafybei" + "".join(rng.choices(BASE32, k=52))


def _result(rng: random.Random) -> tuple[Any, ...]:
    round_id = rng.choice([rng.randrange(1, 1000), rng.randrange(2**256)])
    participant = to_checksum_address(rng.randbytes(20))
    score = rng.randint(-(2**31), 2**31 - 1)
    return (round_id, participant, rng.randrange(256), score, rng.randrange(2**256), rng.randrange(2**32))


def _commitment(rng: random.Random) -> tuple[Any, ...]:
    return (rng.randrange(1, 1000), to_checksum_address(rng.randbytes(20)), rng.randbytes(32), _cid(rng))


def _values(types: tuple[str, ...], n: int, seed: int) -> list[tuple[Any, ...]]:
    """``n`` distinct deterministic values; the first ones hit the edges (negative scores, extremes, empty cid)."""
    rng = random.Random(seed)
    make = _result if types == RESULT_LEAF_TYPES else _commitment
    edges: list[tuple[Any, ...]]
    if types == RESULT_LEAF_TYPES:
        edges = [
            (7, to_checksum_address(rng.randbytes(20)), 2, -1, 0, 0),
            (2**256 - 1, "0x" + "00" * 20, 255, -(2**31), 2**256 - 1, 2**32 - 1),
            (1, to_checksum_address(rng.randbytes(20)), 0, 2**31 - 1, 10**18, 5),
        ]
    else:
        edges = [
            (3, to_checksum_address(rng.randbytes(20)), b"\x00" * 32, ""),
            (2**256 - 1, to_checksum_address(rng.randbytes(20)), b"\xff" * 32, "bafy-ü-日本-🙂"),
        ]
    values: list[tuple[Any, ...]] = []
    seen: set[tuple[Any, ...]] = set()
    while len(values) < n:
        value = edges.pop(0) if edges and n >= 4 else make(rng)
        if value not in seen:
            seen.add(value)
            values.append(value)
    return values


def _js(value: Any) -> Any:
    """The JSON form the npm package is fed: integers as decimal strings, bytes as 0x-hex."""
    if isinstance(value, (tuple, list)):
        return [_js(item) for item in value]
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int):
        return str(value)
    return value


def _hexes(nodes: list[bytes]) -> list[str]:
    return ["0x" + node.hex() for node in nodes]


Case = tuple[str, tuple[str, ...], bool, list[tuple[Any, ...]]]
CASES: dict[str, Case] = {}
for _name, _types in (("result", RESULT_LEAF_TYPES), ("commitment", COMMITMENT_LEAF_TYPES)):
    for _n in SIZES:
        CASES[f"{_name}-{_n}"] = (_name, _types, True, _values(_types, _n, seed=_n))
    for _n in UNSORTED_SIZES:
        CASES[f"{_name}-{_n}-unsorted"] = (_name, _types, False, _values(_types, _n, seed=1000 + _n))


@pytest.fixture(scope="module")
def npm() -> dict[str, dict[str, Any]]:
    """Every case built once by @openzeppelin/merkle-tree (one node run for all of them)."""
    if not (NPM_PACKAGE / "package.json").is_file():
        pytest.fail(f"{NPM_PACKAGE} is missing: run 'npm ci' in hardhat/ (the cross-check needs the npm package)")
    node = shutil.which("node")
    if node is None:
        pytest.fail("'node' is not on PATH: the cross-check against @openzeppelin/merkle-tree needs it")
    batch = [
        {"types": list(types), "values": _js(values), "options": {"sortLeaves": sort}}
        for _, types, sort, values in CASES.values()
    ]
    run = subprocess.run(
        [node, str(SCRIPT)],
        cwd=HARDHAT_DIR,
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert run.returncode == 0, f"{SCRIPT.name} failed:\n{run.stderr}"
    return dict(zip(CASES, json.loads(run.stdout), strict=True))


def test_the_pinned_npm_package_is_1_x() -> None:
    if not (NPM_PACKAGE / "package.json").is_file():
        pytest.fail(f"{NPM_PACKAGE} is missing: run 'npm ci' in hardhat/")
    pinned = json.loads((HARDHAT_DIR / "package.json").read_text())["dependencies"]["@openzeppelin/merkle-tree"]
    installed = json.loads((NPM_PACKAGE / "package.json").read_text())["version"]
    assert pinned == installed and installed.startswith("1.")


@pytest.mark.parametrize("case", CASES)
def test_root_proofs_and_dump_match_the_npm_package(case: str, npm: dict[str, dict[str, Any]]) -> None:
    _, types, sort, values = CASES[case]
    tree = StandardMerkleTree.of(values, types, sort_leaves=sort)
    expected = npm[case]
    assert "0x" + tree.root.hex() == expected["root"]
    assert [_hexes(tree.proof(i)) for i in range(len(values))] == expected["proofs"]
    assert tree.dump() == expected["dump"]


@pytest.mark.parametrize("case", [c for c in CASES if c.endswith(("-1", "-9", "-17", "-1000", "-7-unsorted"))])
def test_loading_the_npm_dump_gives_the_same_tree(case: str, npm: dict[str, dict[str, Any]]) -> None:
    _, types, _, values = CASES[case]
    loaded = StandardMerkleTree.load(npm[case]["dump"])
    assert "0x" + loaded.root.hex() == npm[case]["root"]
    assert loaded.types == types and loaded.values == tuple(values)
    assert [_hexes(loaded.proof(i)) for i in range(len(values))] == npm[case]["proofs"]
    assert StandardMerkleTree.load(json.loads(json.dumps(loaded.dump()))).dump() == npm[case]["dump"]


def _changed(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """The same value with one field moved: the score for a result, the cid for a commitment."""
    if len(value) == len(RESULT_LEAF_TYPES):
        return value[:3] + (value[3] - 1 if value[3] > -(2**31) else value[3] + 1,) + value[4:]
    return value[:3] + (value[3] + "x",)


@pytest.mark.parametrize("case", [c for c in CASES if not c.endswith("unsorted")])
def test_every_npm_proof_verifies_and_tampering_does_not(case: str, npm: dict[str, dict[str, Any]]) -> None:
    _, types, _, values = CASES[case]
    root = npm[case]["root"]
    wrong_root = root[:-2] + ("00" if root[-2:] != "00" else "01")
    tree = StandardMerkleTree.of(values, types)
    for i, (value, proof) in enumerate(zip(values, npm[case]["proofs"], strict=True)):
        assert verify_proof(root, types, value, proof)
        assert tree.verify(proof, value)
        if i % 25:  # tamper with every value of the small trees, a sample of the big ones
            continue
        assert not verify_proof(root, types, _changed(value), proof)
        assert not verify_proof(wrong_root, types, value, proof)
        if proof:
            assert not verify_proof(root, types, value, proof[:-1])
            assert not verify_proof(root, types, value, proof[1:])


def test_the_openzeppelin_readme_example() -> None:
    values = [
        ["0x1111111111111111111111111111111111111111", "5000000000000000000"],
        ["0x2222222222222222222222222222222222222222", "2500000000000000000"],
    ]
    tree = StandardMerkleTree.of(values, ["address", "uint256"])
    assert tree.root.hex() == "d4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77"
    assert len(tree) == 2 and tree.types == ("address", "uint256")
    assert StandardMerkleTree.verify_proof(tree.root, ["address", "uint256"], values[0], tree.proof(0))
    assert tree.values[1] == ("0x2222222222222222222222222222222222222222", 2500000000000000000)
    assert tree.index_of(["0x2222222222222222222222222222222222222222", 2500000000000000000]) == 1
    with pytest.raises(MerkleError, match="not in the tree"):
        tree.index_of(["0x2222222222222222222222222222222222222222", 1])


def test_the_leaf_is_the_double_keccak_of_the_abi_encoding() -> None:
    value = (5, "0x" + "ab" * 20, 1, -3, 10**18, 7)
    assert leaf_hash(RESULT_LEAF_TYPES, value) == keccak(keccak(encode(RESULT_LEAF_TYPES, value)))
    assert StandardMerkleTree.of([value], RESULT_LEAF_TYPES).root == leaf_hash(RESULT_LEAF_TYPES, value)


def test_bad_input_raises_merkle_error() -> None:
    good = _values(RESULT_LEAF_TYPES, 3, seed=1)
    with pytest.raises(MerkleError, match="at least one value"):
        StandardMerkleTree.of([], RESULT_LEAF_TYPES)
    for bad in [
        good[0][:5],  # too few items
        (1, good[0][1], 256, 0, 0, 0),  # uint8 overflow
        (1, good[0][1], 0, 2**31, 0, 0),  # int32 overflow
        (-1, good[0][1], 0, 0, 0, 0),  # negative uint256
        (1, "0x1234", 0, 0, 0, 0),  # not an address
        (1, good[0][1], 0, 1.5, 0, 0),  # not an integer
        (1, good[0][1], "x", 0, 0, 0),  # not an integer either
    ]:
        with pytest.raises(MerkleError):
            StandardMerkleTree.of([*good, bad], RESULT_LEAF_TYPES)
    with pytest.raises(MerkleError):
        leaf_hash(COMMITMENT_LEAF_TYPES, (1, good[0][1], b"\x01" * 31 + b"\x00" * 2, "cid"))  # 33 bytes
    with pytest.raises(MerkleError, match="bad leaf types"):
        leaf_hash(["uint257"], [1])
    tree = StandardMerkleTree.of(good, RESULT_LEAF_TYPES)
    for index in (-1, 3, True, "0"):
        with pytest.raises(MerkleError, match="out of range"):
            tree.proof(index)  # type: ignore[arg-type]
    with pytest.raises(MerkleError, match="32 bytes"):
        verify_proof(tree.root, RESULT_LEAF_TYPES, good[0], ["0x1234"])


def test_a_tampered_dump_is_refused() -> None:
    dump = StandardMerkleTree.of(_values(COMMITMENT_LEAF_TYPES, 5, seed=2), COMMITMENT_LEAF_TYPES).dump()
    with pytest.raises(MerkleError, match="format"):
        StandardMerkleTree.load({**dump, "format": "simple-v1"})
    with pytest.raises(MerkleError, match="not the hash of its children"):
        StandardMerkleTree.load({**dump, "tree": ["0x" + "00" * 32, *dump["tree"][1:]]})
    moved = [dict(entry) for entry in dump["values"]]
    moved[0]["treeIndex"], moved[1]["treeIndex"] = moved[1]["treeIndex"], moved[0]["treeIndex"]
    with pytest.raises(MerkleError, match="does not contain"):
        StandardMerkleTree.load({**dump, "values": moved})
    changed = [dict(entry) for entry in dump["values"]]
    changed[2]["value"] = [*changed[2]["value"][:3], "QmOther"]
    with pytest.raises(MerkleError, match="does not contain"):
        StandardMerkleTree.load({**dump, "values": changed})


def test_a_thousand_leaves_give_proofs_of_tree_depth_that_each_verify() -> None:
    """Speed is the bench's business (timings are never asserted); here: every proof of a 1,000-leaf tree is
    10 hashes or fewer and proves its own leaf, and only its own."""
    values = CASES["result-1000"][3]
    tree = StandardMerkleTree.of(values, RESULT_LEAF_TYPES)
    proofs = [tree.proof(i) for i in range(len(values))]
    assert len(proofs) == 1000 and all(len(p) in (9, 10) for p in proofs)
    assert all(tree.verify(proofs[i], values[i]) for i in range(len(values)))
    assert not tree.verify(proofs[0], values[1])