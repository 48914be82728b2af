"""RFC 9162 Merkle trees: published Certificate Transparency vectors, a naive reference, and
every proof of every small tree, good and corrupted."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homewarden.crypto import merkle
from homewarden.errors import InvalidProofError

# ---------------------------------------------------------------------------------------------
# Published vectors. Source: github.com/transparency-dev/merkle (the Go library behind
# Certificate Transparency's Trillian), proof/verify_test.go (`leaves`, `roots`,
# `inclusionProofs`, `consistencyProofs`) and rfc6962/rfc6962_test.go; the same 8-leaf
# reference tree as certificate-transparency-go's merkletree tests. Transcribed as published.

CT_LEAVES = [
    bytes.fromhex(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
# MTH of the first n leaves, n = 1..8
CT_ROOTS = [
    bytes.fromhex(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (leaf number, 1-based as published; tree size; audit path)
CT_INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, consistency proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# Which subtrees a proof holds, for trees too big to list hashes. Source: transparency-dev/merkle
# proof/proof_test.go (TestInclusion, TestConsistency); its node ids (level, index) and
# "rehash" groups are written here as the leaf range [a, b) whose MTH is each proof element.
STRUCTURE_INCLUSION = {
    (7, 0): [(1, 2), (2, 4), (4, 7)],
    (7, 2): [(3, 4), (0, 2), (4, 7)],
    (7, 4): [(5, 6), (6, 7), (0, 4)],
    (7, 6): [(4, 6), (0, 4)],
    (5, 3): [(2, 3), (0, 2), (4, 5)],
    (6, 3): [(2, 3), (0, 2), (4, 6)],
    (6, 4): [(5, 6), (0, 4)],
    (15, 10): [(11, 12), (8, 10), (12, 15), (0, 8)],
    (31, 24): [(25, 26), (26, 28), (28, 31), (16, 24), (0, 16)],
    (95, 81): [(80, 81), (82, 84), (84, 88), (88, 95), (64, 80), (0, 64)],
}
STRUCTURE_CONSISTENCY = {
    (1, 2): [(1, 2)],
    (1, 4): [(1, 2), (2, 4)],
    (1, 6): [(1, 2), (2, 4), (4, 6)],
    (2, 3): [(2, 3)],
    (2, 8): [(2, 4), (4, 8)],
    (3, 7): [(2, 3), (3, 4), (0, 2), (4, 7)],
    (4, 7): [(4, 7)],
    (5, 7): [(4, 5), (5, 6), (6, 7), (0, 4)],
    (6, 7): [(4, 6), (6, 7), (0, 4)],
    (7, 8): [(6, 7), (7, 8), (4, 6), (0, 4)],
    (2, 4): [(2, 4)],
    (3, 5): [(2, 3), (3, 4), (0, 2), (4, 5)],
    (3, 6): [(2, 3), (3, 4), (0, 2), (4, 6)],
    (4, 6): [(4, 6)],
    (1, 7): [(1, 2), (2, 4), (4, 7)],
    (10, 15): [(8, 10), (10, 12), (12, 15), (0, 8)],
    (24, 31): [(16, 24), (24, 31), (0, 16)],
    (81, 95): [(80, 81), (81, 82), (82, 84), (84, 88), (88, 95), (64, 80), (0, 64)],
}


# ---------------------------------------------------------------------------------------------
# A naive reference: RFC 9162 2.1.1 / 2.1.3.1 / 2.1.4.1 as written, recursive, no storage.


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    return ref_subproof(m, leaves, True)


class Stored:
    """A tree kept the way the log keeps it: leaf hashes plus the nodes append completes."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0
        compact = merkle.CompactRange()
        for i, leaf in enumerate(leaves):
            h = merkle.leaf_hash(leaf)
            self.nodes[(0, i)] = h
            for node, nh in compact.append(h):
                self.nodes[node] = nh
        self.root = compact.root()

    def read(self, ids):
        self.reads += len(ids)
        return {i: self.nodes[i] for i in ids if i in self.nodes}


def numbered(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


# ---------------------------------------------------------------------------------------------
# vectors


def test_hash_vectors_from_rfc6962_test() -> None:
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert merkle.leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert merkle.node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_roots_of_the_reference_tree() -> None:
    assert merkle.root_from_leaf_hashes([]) == merkle.EMPTY_ROOT
    for n in range(1, 9):
        hashes = [merkle.leaf_hash(leaf) for leaf in CT_LEAVES[:n]]
        assert merkle.root_from_leaf_hashes(hashes) == CT_ROOTS[n - 1], n
        stored = Stored(CT_LEAVES[:n])
        assert stored.root == CT_ROOTS[n - 1]
        assert merkle.root_hash(n, stored.read) == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("leaf", "size", "path"), CT_INCLUSION)
def test_inclusion_vectors(leaf: int, size: int, path: list[str]) -> None:
    index = leaf - 1
    expected = [bytes.fromhex(h) for h in path]
    stored = Stored(CT_LEAVES[:size])
    assert merkle.inclusion_proof(index, size, stored.read) == expected
    merkle.verify_inclusion(
        index, size, merkle.leaf_hash(CT_LEAVES[index]), expected, CT_ROOTS[size - 1]
    )


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_consistency_vectors(old: int, new: int, path: list[str]) -> None:
    expected = [bytes.fromhex(h) for h in path]
    stored = Stored(CT_LEAVES[:new])
    assert merkle.consistency_proof(old, new, stored.read) == expected
    merkle.verify_consistency(old, new, CT_ROOTS[old - 1], CT_ROOTS[new - 1], expected)


@pytest.mark.parametrize(("size", "index"), sorted(STRUCTURE_INCLUSION))
def test_inclusion_structure_vectors(size: int, index: int) -> None:
    assert merkle.inclusion_ranges(index, size) == STRUCTURE_INCLUSION[(size, index)]


@pytest.mark.parametrize(("old", "new"), sorted(STRUCTURE_CONSISTENCY))
def test_consistency_structure_vectors(old: int, new: int) -> None:
    assert merkle.consistency_ranges(old, new) == STRUCTURE_CONSISTENCY[(old, new)]


# ---------------------------------------------------------------------------------------------
# against the naive reference


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=0, max_size=70))
def test_random_trees_match_the_reference(leaves: list[bytes]) -> None:
    stored = Stored(leaves)
    assert stored.root == ref_mth(leaves)
    n = len(leaves)
    for size in range(n + 1):
        assert merkle.root_hash(size, stored.read) == ref_mth(leaves[:size])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_proofs_match_the_reference(data: st.DataObject) -> None:
    leaves = data.draw(st.lists(st.binary(max_size=16), min_size=1, max_size=200))
    n = len(leaves)
    stored = Stored(leaves)
    size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(1, size))
    path = merkle.inclusion_proof(index, size, stored.read)
    assert path == ref_path(index, leaves[:size])
    root = ref_mth(leaves[:size])
    merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), path, root)
    cons = merkle.consistency_proof(old, size, stored.read)
    assert cons == ref_proof(old, leaves[:size])
    merkle.verify_consistency(old, size, ref_mth(leaves[:old]), root, cons)


def test_every_proof_of_every_tree_up_to_64() -> None:
    leaves = numbered(64)
    stored = Stored(leaves)
    roots = [ref_mth(leaves[:n]) for n in range(65)]
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    for n in range(1, 65):
        for i in range(n):
            path = merkle.inclusion_proof(i, n, stored.read)
            assert path == ref_path(i, leaves[:n]), (i, n)
            merkle.verify_inclusion(i, n, hashes[i], path, roots[n])
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, n, stored.read)
            assert proof == ref_proof(m, leaves[:n]), (m, n)
            merkle.verify_consistency(m, n, roots[m], roots[n], proof)


def test_proofs_read_logarithmically_many_nodes() -> None:
    n = 100_003
    stored = Stored(numbered(n))
    stored.reads = 0
    merkle.inclusion_proof(54_321, n, stored.read)
    assert stored.reads <= 2 * n.bit_length()
    stored.reads = 0
    merkle.consistency_proof(77_777, n, stored.read)
    assert stored.reads <= 2 * n.bit_length()


def test_compact_range_reports_the_nodes_each_append_completes() -> None:
    compact = merkle.CompactRange()
    made: dict[int, list[tuple[int, int]]] = {}
    for i in range(16):
        made[i] = [tuple(node) for node, _ in compact.append(merkle.leaf_hash(b"%d" % i))]
    assert made[0] == []
    assert made[1] == [(1, 0)]
    assert made[3] == [(1, 1), (2, 0)]
    assert made[6] == []
    assert made[7] == [(1, 3), (2, 1), (3, 0)]
    assert made[15] == [(1, 7), (2, 3), (3, 1), (4, 0)]
    assert len(compact.hashes) == 1  # 16 leaves: one complete subtree


def test_decompose_rejects_ranges_that_are_no_subtree() -> None:
    assert merkle.decompose(8, 15) == [(2, 2), (1, 6), (0, 14)]
    for a, b in [(3, 7), (1, 4), (5, 5), (-1, 3)]:
        with pytest.raises(InvalidProofError):
            merkle.decompose(a, b)


def test_missing_stored_node_is_reported() -> None:
    stored = Stored(numbered(10))
    del stored.nodes[(2, 0)]
    with pytest.raises(InvalidProofError, match=r"\(2, 0\).*missing"):
        merkle.inclusion_proof(5, 10, stored.read)


# ---------------------------------------------------------------------------------------------
# bad proofs raise (the corruptions of transparency-dev/merkle's verify_test.go)

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ bit]) + out[i][1:]
    return out


@pytest.mark.parametrize(("leaf", "size", "path"), CT_INCLUSION)
def test_corrupted_inclusion_proofs_raise(leaf: int, size: int, path: list[str]) -> None:
    index = leaf - 1
    proof = [bytes.fromhex(h) for h in path]
    root = CT_ROOTS[size - 1]
    lh = merkle.leaf_hash(CT_LEAVES[index])
    probes = [
        (index - 1, size, lh, proof, root),
        (index + 1, size, lh, proof, root),
        (index ^ 2, size, lh, proof, root),
        (index, size * 2, lh, proof, root),
        (index, size // 2, lh, proof, root),
        (index, size, merkle.leaf_hash(b"WrongLeaf"), proof, root),
        (index, size, lh, proof, merkle.EMPTY_ROOT),
        (index, size, lh, proof, SOME_HASH),
        (index, size, lh, [*proof, root], root),
        (index, size, lh, [root, *proof], root),
        (index, size, lh, [*proof, b""], root),
        (index, size, lh, proof[:-1], root),
    ]
    probes += [(index, size, lh, _flip(proof, i, 8), root) for i in range(len(proof))]
    if len(proof) > 1:
        probes.append((index, size, lh, [proof[0], SOME_HASH, *proof[1:]], root))
    for i, n, h, p, r in probes:
        if i < 0:
            continue
        with pytest.raises(InvalidProofError):
            merkle.verify_inclusion(i, n, h, p, r)


@pytest.mark.parametrize(("old", "new", "path"), [v for v in CT_CONSISTENCY if v[2]])
def test_corrupted_consistency_proofs_raise(old: int, new: int, path: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in path]
    r1, r2 = CT_ROOTS[old - 1], CT_ROOTS[new - 1]
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, SOME_HASH, r2, proof),
        (old, new, r1, SOME_HASH, proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    probes += [(old, new, r1, r2, _flip(proof, i, 16)) for i in range(len(proof))]
    for m, n, a, b, p in probes:
        with pytest.raises(InvalidProofError):
            merkle.verify_consistency(m, n, a, b, p)


def test_edge_cases_of_verification() -> None:
    root = merkle.leaf_hash(b"data")
    merkle.verify_inclusion(0, 1, root, [], root)  # a one-entry tree: root = leaf hash
    for index, size in [(0, 0), (1, 1), (2, 1)]:
        with pytest.raises(InvalidProofError):
            merkle.verify_inclusion(index, size, SOME_HASH, [], merkle.EMPTY_ROOT)
    with pytest.raises(InvalidProofError, match="32-byte"):
        merkle.verify_inclusion(0, 1, b"", [], root)
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, SOME_HASH, [])
    merkle.verify_consistency(3, 3, SOME_HASH, SOME_HASH, [])
    with pytest.raises(InvalidProofError, match="different roots"):
        merkle.verify_consistency(3, 3, SOME_HASH, root, [])
    with pytest.raises(InvalidProofError, match="must be empty"):
        merkle.verify_consistency(3, 3, SOME_HASH, SOME_HASH, [root])
    with pytest.raises(InvalidProofError, match="larger"):
        merkle.verify_consistency(2, 1, SOME_HASH, root, [])
    with pytest.raises(InvalidProofError):
        merkle.verify_inclusion(True, 2, root, [root], root)  # type: ignore[arg-type]
