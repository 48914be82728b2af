"""Merkle hash trees, inclusion and consistency proofs, exactly as RFC 9162 section 2.1.

Standard-library hashing only. The tree is the Certificate Transparency one (RFC 9162 2.1.1,
unchanged from RFC 6962 2.1), over SHA-256:

* ``MTH({}) = SHA-256()``; the hash of a leaf ``d`` is ``SHA-256(0x00 || d)``;
* ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` where ``k`` is the largest power
  of two smaller than ``n``.

Storage scheme (how proofs come from a store in O(log n) reads). Every node of such a tree
covers ``[j * 2**l, min((j + 1) * 2**l, n))`` for a level ``l`` and an index ``j``. A node that
is *complete* (it covers exactly ``2**l`` leaves) never changes once the log holds its last
leaf, so a log keeps one row per complete node, keyed by :class:`NodeId` ``(level, idx)``:
level 0 is the leaf hash, levels >= 1 are the interior nodes. Appending leaf ``i`` completes
exactly ``trailing_zeros(i + 1)`` interior nodes (one on average), which
:meth:`CompactRange.append` returns for the caller to store. Any other range an RFC 9162 proof
names, ``[a, b)`` with ``a`` a multiple of a power of two ``>= b - a``, is the right-to-left
fold of the complete nodes of its binary decomposition (:func:`decompose`), at most
``log2(n)`` of them. So an inclusion or consistency proof needs the hashes of at most
``~2 * log2(n)`` complete nodes, fetched in one batch through a :data:`NodeReader`.

Verifiers raise :class:`~homewarden.errors.InvalidProofError` with a reason; they never return
False (sigstore-python's habit, ``sigstore/_internal/merkle.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from homewarden.errors import InvalidProofError

#: Bytes of a SHA-256 digest, the size of every node hash.
HASH_SIZE = 32
#: RFC 9162 2.1.1: the hash of an empty list is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class NodeId(NamedTuple):
    """A complete subtree: ``2**level`` leaves from ``idx * 2**level``. Level 0 is a leaf."""

    level: int
    idx: int

    @property
    def start(self) -> int:
        """First leaf index covered."""
        return self.idx << self.level

    @property
    def end(self) -> int:
        """One past the last leaf index covered."""
        return (self.idx + 1) << self.level


#: Reads the stored hashes of complete nodes in one batch, keyed by ``(level, index)``; an id
#: it leaves out is reported as missing.
NodeReader = Callable[[Sequence[NodeId]], Mapping[tuple[int, int], bytes]]


def _hash_leaf(leaf: bytes) -> bytes:
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def _hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def leaf_hash(leaf: bytes) -> bytes:
    """The RFC 9162 leaf hash ``SHA-256(0x00 || leaf)`` (32 bytes) of one log entry's bytes."""
    return _hash_leaf(leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 interior node hash ``SHA-256(0x01 || left || right)`` (32 bytes)."""
    return _hash_children(left, right)


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidProofError(f"{name} must be a non-negative integer, got {value!r}")


# ------------------------------------------------------------------------------------------
# Building: roots, the compact range, decomposition of a range into complete nodes


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """``MTH`` of a list given by its leaf hashes (each 32 bytes); ``EMPTY_ROOT`` when empty.

    Iterative (a :class:`CompactRange`), O(n) hashes and O(log n) memory.
    """
    compact = CompactRange()
    for h in hashes:
        compact.push(h)
    return compact.root()


class CompactRange:
    """The hashes of the complete subtrees of a growing tree: its binary decomposition.

    A tree of ``size`` leaves is the complete subtrees of the set bits of ``size``, largest
    first; :attr:`hashes` holds their hashes in that order. :meth:`append` adds a leaf and
    returns the interior nodes it completes; :meth:`root` folds the subtrees right to left into
    ``MTH`` of the whole list. Start from a stored tree with :meth:`from_nodes`.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_nodes(cls, size: int, read: NodeReader) -> CompactRange:
        """The compact range of the stored tree of ``size`` leaves (``popcount(size)`` reads).

        Raises:
            InvalidProofError: ``size`` is negative or ``read`` lacks a node.
        """
        _check_size("size", size)
        out = cls()
        if size == 0:
            return out
        ids = decompose(0, size)
        found = read(ids)
        out._size = size
        out._hashes = [_need(found, i) for i in ids]
        return out

    @property
    def size(self) -> int:
        """Leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Hashes of the complete subtrees, largest (leftmost) first."""
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        """An independent copy."""
        out = CompactRange()
        out._size = self._size
        out._hashes = list(self._hashes)
        return out

    def append(self, leaf_hash: bytes) -> list[tuple[NodeId, bytes]]:
        """Add the leaf with hash ``leaf_hash`` (32 bytes); returns the interior nodes it
        completes, lowest level first, as ``(NodeId, hash)`` (empty for an even index)."""
        index = self._size
        carry = leaf_hash
        level = 0
        made: list[tuple[NodeId, bytes]] = []
        hashes = self._hashes
        # Bit `level` of the old size set = a complete subtree of 2**level leaves ends just
        # before the new leaf: it is the left sibling, merge.
        while (index >> level) & 1:
            carry = _hash_children(hashes.pop(), carry)
            level += 1
            made.append((NodeId(level, index >> level), carry))
        hashes.append(carry)
        self._size = index + 1
        return made

    def push(self, leaf_hash: bytes) -> None:
        """:meth:`append` without reporting the completed nodes (faster when not storing)."""
        index = self._size
        carry = leaf_hash
        hashes = self._hashes
        while index & 1:
            carry = _hash_children(hashes.pop(), carry)
            index >>= 1
        hashes.append(carry)
        self._size += 1

    def root(self) -> bytes:
        """``MTH`` of the leaves so far (32 bytes); :data:`EMPTY_ROOT` for none."""
        if not self._hashes:
            return EMPTY_ROOT
        return _fold(self._hashes)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Right-to-left fold of the decomposition of a range into its ``MTH``."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = _hash_children(h, acc)
    return acc


def decompose(start: int, end: int) -> list[NodeId]:
    """The complete nodes of the binary decomposition of leaves ``[start, end)``, left first.

    ``start`` must be a multiple of a power of two at least ``end - start`` (true of every
    node of an RFC 9162 tree, and so of every range a proof names); then the right-to-left fold
    of these nodes' hashes is ``MTH(D[start:end])``.

    Raises:
        InvalidProofError: the range is empty or not aligned so.
    """
    n = end - start
    if start < 0 or n <= 0:
        raise InvalidProofError(f"empty or negative leaf range [{start}, {end})")
    if start & ((1 << (n - 1).bit_length()) - 1):
        raise InvalidProofError(f"leaf range [{start}, {end}) is not a subtree of any tree")
    out: list[NodeId] = []
    pos = start
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            out.append(NodeId(level, pos >> level))
            pos += 1 << level
    return out


def _need(found: Mapping[tuple[int, int], bytes], node: NodeId) -> bytes:
    h = found.get(node)
    if h is None:
        raise InvalidProofError(
            f"node {tuple(node)} (leaves {node.start}..{node.end - 1}) is missing"
        )
    if len(h) != HASH_SIZE:
        raise InvalidProofError(f"node {tuple(node)} has {len(h)} bytes, not {HASH_SIZE}")
    return h


def subtree_hashes(ranges: Sequence[tuple[int, int]], read: NodeReader) -> list[bytes]:
    """``MTH(D[a:b])`` of each range, from the stored complete nodes, in one batched read.

    Raises:
        InvalidProofError: a range is not a subtree, or ``read`` lacks a node.
    """
    parts = [decompose(a, b) for a, b in ranges]
    wanted = sorted({node for nodes in parts for node in nodes})
    found = read(wanted) if wanted else {}
    return [_fold([_need(found, n) for n in nodes]) for nodes in parts]


# ------------------------------------------------------------------------------------------
# Proof generation (RFC 9162 2.1.3.1 and 2.1.4.1), as the leaf ranges whose MTH forms the proof


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.3.1 ``PATH(index, D[size])`` as the ``[a, b)`` ranges of its hashes,
    leaf-side first.

    Raises:
        InvalidProofError: ``index >= size``.
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise InvalidProofError(f"leaf index {index} is not in a tree of size {size}")
    path: list[tuple[int, int]] = []
    lo, hi, m = 0, size, index
    # PATH(m, D[lo:hi]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k, else
    # PATH(m - k, D[k:n]) : MTH(D[0:k]); appended items come out leaf-side first, so walk
    # down and collect, then reverse.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
            m -= k
    path.reverse()
    return path


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.4.1 ``PROOF(old_size, D[new_size])`` as the ``[a, b)`` ranges of its hashes.

    Defined by the RFC for ``0 < old_size < new_size``; for ``old_size == new_size`` or
    ``old_size == 0`` the proof is empty (every tree is consistent with itself and with the
    empty tree).

    Raises:
        InvalidProofError: ``old_size > new_size``.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise InvalidProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    out: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[lo:hi], b), collected root-side first then reversed at the end.
    while True:
        if m == hi - lo:
            if not whole:
                out.append((lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    out.reverse()
    return out


def inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """The RFC 9162 inclusion proof (audit path) of leaf ``index`` in the tree of ``size``,
    from stored complete nodes (one batched read of at most ~2*log2(size) nodes).

    Raises:
        InvalidProofError: ``index >= size`` or a node is missing from the store.
    """
    return subtree_hashes(inclusion_ranges(index, size), read)


def consistency_proof(old_size: int, new_size: int, read: NodeReader) -> list[bytes]:
    """The RFC 9162 consistency proof between tree sizes ``old_size <= new_size``.

    Raises:
        InvalidProofError: ``old_size > new_size`` or a node is missing from the store.
    """
    return subtree_hashes(consistency_ranges(old_size, new_size), read)


def root_hash(size: int, read: NodeReader) -> bytes:
    """``MTH`` of the first ``size`` stored leaves (``popcount(size)`` node reads)."""
    _check_size("size", size)
    if size == 0:
        return EMPTY_ROOT
    return subtree_hashes([(0, size)], read)[0]


# ------------------------------------------------------------------------------------------
# Verification (RFC 9162 2.1.3.2 and 2.1.4.2)


def _check_hashes(what: str, hashes: Iterable[bytes]) -> None:
    for i, h in enumerate(hashes):
        if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
            raise InvalidProofError(f"{what}[{i}] is not a {HASH_SIZE}-byte hash")


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    The algorithm of RFC 9162 2.1.3.2, step for step.

    Raises:
        InvalidProofError: the proof does not verify; the message says why.
    """
    _check_size("index", index)
    _check_size("size", size)
    _check_hashes("leaf hash", [leaf_hash])
    _check_hashes("root", [root])
    _check_hashes("proof", proof)
    # (1) leaf_index must be inside the tree.
    if index >= size:
        raise InvalidProofError(f"leaf index {index} is not in a tree of size {size}")
    # (2) fn = leaf_index, sn = tree_size - 1; (3) r = hash.
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    # (4) fold the path.
    for p in proof:
        # (4a) a path longer than the tree is high fails.
        if sn == 0:
            raise InvalidProofError(
                f"inclusion proof has {len(proof)} hashes, too many for leaf {index} of {size}"
            )
        # (4b)
        if fn & 1 or fn == sn:
            r = _hash_children(p, r)
            # (4b ii) a left child on the right edge: climb to where it is a right child.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _hash_children(r, p)
        # (4c)
        fn >>= 1
        sn >>= 1
    # (5) sn must be 0 and r the root.
    if sn != 0:
        raise InvalidProofError(
            f"inclusion proof has {len(proof)} hashes, too few for leaf {index} of {size}"
        )
    if r != root:
        raise InvalidProofError(
            f"inclusion proof of leaf {index} in a tree of size {size} leads to root "
            f"{r.hex()}, not {bytes(root).hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``
    with ``old_root``.

    The algorithm of RFC 9162 2.1.4.2, step for step, for ``0 < old_size < new_size``. Equal
    sizes need an empty proof and equal roots; an old size of 0 needs an empty proof.

    Raises:
        InvalidProofError: the proof does not verify; the message says why.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    _check_hashes("root", [old_root, new_root])
    _check_hashes("proof", proof)
    if old_size > new_size:
        raise InvalidProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == new_size:
        if proof:
            raise InvalidProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise InvalidProofError(f"two different roots for the same tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise InvalidProofError("consistency proof from the empty tree must be empty")
        return
    # (1) an empty path fails.
    if not proof:
        raise InvalidProofError(f"empty consistency proof from size {old_size} to {new_size}")
    path = list(proof)
    # (2) first a power of two: its root is the first node of the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    # (3) fn = first - 1, sn = second - 1.
    fn, sn = old_size - 1, new_size - 1
    # (4) drop the common right edge.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5) fr = sr = first path value.
    fr = sr = path[0]
    # (6) fold the rest.
    for c in path[1:]:
        # (6a)
        if sn == 0:
            raise InvalidProofError(
                f"consistency proof has {len(proof)} hashes, too many for {old_size} -> {new_size}"
            )
        # (6b)
        if fn & 1 or fn == sn:
            fr = _hash_children(c, fr)
            sr = _hash_children(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _hash_children(sr, c)
        # (6c)
        fn >>= 1
        sn >>= 1
    # (7) fr = first_hash, sr = second_hash, sn = 0.
    if sn != 0:
        raise InvalidProofError(
            f"consistency proof has {len(proof)} hashes, too few for {old_size} -> {new_size}"
        )
    if fr != old_root:
        raise InvalidProofError(
            f"consistency proof does not lead to the old root of size {old_size}"
        )
    if sr != new_root:
        raise InvalidProofError(
            f"consistency proof does not lead to the new root of size {new_size}"
        )
