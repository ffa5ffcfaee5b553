"""OpenZeppelin's ``StandardMerkleTree`` (npm ``@openzeppelin/merkle-tree`` 1.x) in Python: same root, same proofs.

Roots built here are checked on chain by OpenZeppelin's ``MerkleProof.verify``, and trees are exchanged with JS
tooling through the ``"standard-v1"`` JSON dump, so every byte follows the npm package:

* **Leaf** = ``keccak256(keccak256(abi.encode(types, values)))``. The values are ABI-encoded (standard, not packed)
  and hashed twice, so a leaf (the hash of 32+ bytes of encoding) can never be mistaken for an inner node (the
  hash of 64 bytes) in a second-preimage attack.
* **Node** = ``keccak256(min(a, b) ++ max(a, b))``: the two children are sorted as bytes before hashing, so a
  proof is a plain list of sibling hashes with no left/right flags (what ``MerkleProof.processProof`` expects).
* **Layout**: a complete binary tree in one array of ``2n - 1`` hashes; node ``i`` has children ``2i + 1`` and
  ``2i + 2``, the root is ``tree[0]``, and leaf ``k`` (after sorting) sits at ``tree[len(tree) - 1 - k]``, so
  the leaves fill the array from its end. By default the leaves are sorted by hash first (``sort_leaves``),
  which makes the tree independent of input order; ``values`` and ``proof(i)`` still use the input order.

Values are given the way eth_abi takes them (ints, ``bytes``, address strings); for JSON interchange integers may
also be decimal (or ``0x``) strings and ``bytesN``/``bytes`` ``0x``-hex strings, as in the npm package's dumps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final, TypeAlias

from eth_abi import encode
from eth_abi.exceptions import ABITypeError, EncodingError, ParseError
from eth_abi.grammar import ABIType, BasicType, TupleType, parse
from eth_utils import keccak

from chain.errors import ChainError

__all__ = [
    "COMMITMENT_LEAF_TYPES",
    "DUMP_FORMAT",
    "RESULT_LEAF_TYPES",
    "MerkleError",
    "StandardMerkleTree",
    "leaf_hash",
    "verify_proof",
]

RESULT_LEAF_TYPES: Final = ("uint256", "address", "uint8", "int32", "uint256", "uint32")
"""A round result: roundId, participant, status, score, reward, reputation."""
COMMITMENT_LEAF_TYPES: Final = ("uint256", "address", "bytes32", "string")
"""A model-update commitment: roundId, participant, contentHash, cid."""
DUMP_FORMAT: Final = "standard-v1"

Hash: TypeAlias = bytes | str  # a 32-byte node, as bytes or 0x-hex


class MerkleError(ChainError, ValueError):
    """Bad tree input: no values, an index out of range, values that do not encode under the types, a bad dump."""


# --- hashing -----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _parse_types(types: tuple[str, ...]) -> tuple[ABIType, ...]:
    try:
        parsed = tuple(parse(t) for t in types)
        for abi_type in parsed:
            abi_type.validate()
        return parsed
    except (ParseError, ABITypeError, TypeError) as exc:
        raise MerkleError(f"bad leaf types {list(types)}: {exc}") from exc


def _coerce(abi_type: ABIType, value: Any) -> Any:
    """``value`` as eth_abi wants it: JSON forms (decimal/hex strings) become ints and bytes."""
    if abi_type.is_array:
        if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
            raise MerkleError(f"{abi_type.to_type_str()} needs a list, got {value!r}")
        return tuple(_coerce(abi_type.item_type, item) for item in value)
    if isinstance(abi_type, TupleType):
        if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
            raise MerkleError(f"{abi_type.to_type_str()} needs a list, got {value!r}")
        if len(value) != len(abi_type.components):
            raise MerkleError(f"{abi_type.to_type_str()} needs {len(abi_type.components)} items, got {len(value)}")
        return tuple(_coerce(component, item) for component, item in zip(abi_type.components, value))
    assert isinstance(abi_type, BasicType)
    if abi_type.base in ("uint", "int"):
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
            except ValueError as exc:
                raise MerkleError(f"{abi_type.to_type_str()}: not an integer: {value!r}") from exc
        if isinstance(value, bool) or not isinstance(value, int):
            raise MerkleError(f"{abi_type.to_type_str()}: not an integer: {value!r}")
        return value
    if abi_type.base == "bytes":
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str) and value[:2].lower() == "0x":
            try:
                return bytes.fromhex(value[2:])
            except ValueError as exc:
                raise MerkleError(f"{abi_type.to_type_str()}: not hex: {value!r}") from exc
        raise MerkleError(f"{abi_type.to_type_str()}: needs bytes or 0x-hex, got {value!r}")
    return value


def _encode_leaf(types: tuple[str, ...], value: Sequence[Any]) -> tuple[tuple[Any, ...], bytes]:
    """The coerced value and its leaf hash."""
    parsed = _parse_types(types)
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        raise MerkleError(f"a leaf value is a list of {len(types)} items, got {value!r}")
    if len(value) != len(types):
        raise MerkleError(f"leaf types {list(types)} need {len(types)} values, got {len(value)}: {value!r}")
    coerced = tuple(_coerce(t, v) for t, v in zip(parsed, value))
    try:
        encoded = encode(types, coerced)
    except (EncodingError, ABITypeError, ValueError, TypeError, OverflowError) as exc:
        raise MerkleError(f"{value!r} does not encode as {list(types)}: {exc}") from exc
    return coerced, keccak(keccak(encoded))


def leaf_hash(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """``keccak256(keccak256(abi.encode(types, values)))``: OpenZeppelin's standard leaf (``standardLeafHash``)."""
    return _encode_leaf(tuple(types), values)[1]


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a <= b else b + a)


def _node(value: Any, what: str) -> bytes:
    """A 32-byte tree node from bytes or 0x-hex."""
    raw: bytes | None = None
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = bytes.fromhex(value[2:] if value[:2].lower() == "0x" else value)
        except ValueError:
            raw = None
    if raw is None or len(raw) != 32:
        raise MerkleError(f"{what} must be 32 bytes (bytes or 0x-hex), got {value!r}")
    return raw


def _process_proof(leaf: bytes, proof: Sequence[Hash]) -> bytes:
    node = leaf
    for sibling in proof:
        node = _hash_pair(node, _node(sibling, "a proof node"))
    return node


def verify_proof(root: Hash, types: Sequence[str], value: Sequence[Any], proof: Sequence[Hash]) -> bool:
    """Whether ``proof`` proves ``value`` (encoded as ``types``) under ``root``, as ``MerkleProof.verify`` decides.

    Raises :class:`MerkleError` if the value does not encode or a node is not 32 bytes.
    """
    return _process_proof(leaf_hash(types, value), proof) == _node(root, "the root")


def _to_json(value: Any) -> Any:
    """A coerced value in the dump's JSON form: integers as decimal strings, bytes as 0x-hex."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (tuple, list)):
        return [_to_json(item) for item in value]
    return value


# --- the tree ------------------------------------------------------------------------------------------------------


class StandardMerkleTree:
    """A Merkle tree of ABI-encoded values, node for node the tree ``StandardMerkleTree.of`` builds in JS.

    Build one with :meth:`of` or :meth:`load`. Value indices (``proof(i)``, ``values[i]``) are positions in the
    input list, whatever order the leaves have in the tree.
    """

    __slots__ = ("_lookup", "_tree", "_tree_indices", "_types", "_values")

    def __init__(
        self, tree: list[bytes], values: list[tuple[Any, ...]], tree_indices: list[int], types: tuple[str, ...]
    ) -> None:
        """Use :meth:`of` or :meth:`load`; this trusts its (already checked) arguments."""
        self._tree = tree
        self._values = tuple(values)
        self._tree_indices = tree_indices
        self._types = types
        self._lookup = {tree[t]: i for i, t in enumerate(tree_indices)}

    @classmethod
    def of(
        cls, values: Sequence[Sequence[Any]], types: Sequence[str], *, sort_leaves: bool = True
    ) -> StandardMerkleTree:
        """The tree of ``values``, each encoded as ``types``; leaves sorted by hash unless ``sort_leaves=False``."""
        leaf_types = tuple(types)
        if len(values) == 0:
            raise MerkleError("a Merkle tree needs at least one value")
        encoded = [_encode_leaf(leaf_types, value) for value in values]
        order = list(range(len(encoded)))
        if sort_leaves:
            order.sort(key=lambda i: encoded[i][1])  # stable, like Array.prototype.sort
        n = len(order)
        tree: list[bytes] = [b""] * (2 * n - 1)
        tree_indices = [0] * n
        for leaf_index, value_index in enumerate(order):
            tree_indices[value_index] = len(tree) - 1 - leaf_index
            tree[len(tree) - 1 - leaf_index] = encoded[value_index][1]
        for i in range(n - 2, -1, -1):
            tree[i] = _hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(tree, [value for value, _ in encoded], tree_indices, leaf_types)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StandardMerkleTree:
        """A tree from a ``"standard-v1"`` dump (``tree.dump()`` here or in JS), checked node by node."""
        if not isinstance(data, Mapping) or data.get("format") != DUMP_FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else data
            raise MerkleError(f"unknown Merkle tree dump format {got!r} (expected {DUMP_FORMAT!r})")
        leaf_types, nodes, entries = data.get("leafEncoding"), data.get("tree"), data.get("values")
        if not isinstance(leaf_types, list) or not all(isinstance(t, str) for t in leaf_types):
            raise MerkleError("dump: leafEncoding must be a list of ABI type strings")
        if not isinstance(nodes, list) or not nodes:
            raise MerkleError("dump: tree must be a non-empty list of hashes")
        if not isinstance(entries, list) or not entries:
            raise MerkleError("dump: values must be a non-empty list")
        types = tuple(leaf_types)
        tree = [_node(node, "dump: a tree node") for node in nodes]
        for i in range(len(tree)):
            left, right = 2 * i + 1, 2 * i + 2
            if right < len(tree):
                if tree[i] != _hash_pair(tree[left], tree[right]):
                    raise MerkleError(f"dump: tree node {i} is not the hash of its children")
            elif left < len(tree):
                raise MerkleError("dump: tree is not a complete binary tree")
        first_leaf = len(tree) // 2
        values: list[tuple[Any, ...]] = []
        tree_indices: list[int] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or "value" not in entry:
                raise MerkleError(f"dump: values[{i}] must be {{'value': [...], 'treeIndex': n}}")
            tree_index = entry.get("treeIndex")
            if isinstance(tree_index, bool) or not isinstance(tree_index, int):
                raise MerkleError(f"dump: values[{i}].treeIndex must be an integer")
            if not first_leaf <= tree_index < len(tree):
                raise MerkleError(f"dump: values[{i}].treeIndex {tree_index} is not a leaf")
            value, leaf = _encode_leaf(types, entry["value"])
            if tree[tree_index] != leaf:
                raise MerkleError(f"dump: the tree does not contain values[{i}] at {tree_index}")
            values.append(value)
            tree_indices.append(tree_index)
        return cls(tree, values, tree_indices, types)

    def dump(self) -> dict[str, Any]:
        """The ``"standard-v1"`` JSON dump, as the npm package writes it (ints as decimal strings, bytes as hex)."""
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(self._types),
            "tree": ["0x" + node.hex() for node in self._tree],
            "values": [
                {"value": _to_json(value), "treeIndex": tree_index}
                for value, tree_index in zip(self._values, self._tree_indices)
            ],
        }

    @property
    def root(self) -> bytes:
        """The 32-byte root, what a contract stores and ``MerkleProof.verify`` checks against."""
        return self._tree[0]

    @property
    def types(self) -> tuple[str, ...]:
        """The leaf encoding: one ABI type per item of a value."""
        return self._types

    @property
    def values(self) -> tuple[tuple[Any, ...], ...]:
        """The values in input order, coerced for eth_abi (ints, bytes, address strings)."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    def index_of(self, value: Sequence[Any]) -> int:
        """The input index of ``value`` (found by its leaf hash); :class:`MerkleError` if it is not in the tree."""
        index = self._lookup.get(_encode_leaf(self._types, value)[1])
        if index is None:
            raise MerkleError(f"{value!r} is not in the tree")
        return index

    def proof(self, index: int) -> list[bytes]:
        """The sibling hashes from the leaf of ``values[index]`` up to the root (``getProof(index)`` in JS)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self._values):
            raise MerkleError(f"value index {index!r} out of range for a tree of {len(self._values)} values")
        node = self._tree_indices[index]
        proof: list[bytes] = []
        while node > 0:
            proof.append(self._tree[node + 1 if node % 2 else node - 1])
            node = (node - 1) // 2
        return proof

    def verify(self, proof: Sequence[Hash], value: Sequence[Any]) -> bool:
        """Whether ``proof`` proves ``value`` under this tree's root."""
        return verify_proof(self.root, self._types, value, proof)

    @staticmethod
    def verify_proof(root: Hash, types: Sequence[str], value: Sequence[Any], proof: Sequence[Hash]) -> bool:
        """The module's :func:`verify_proof`, as ``StandardMerkleTree.verify`` is a static method in JS."""
        return verify_proof(root, types, value, proof)
