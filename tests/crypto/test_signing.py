"""Ed25519 signed tree heads: canonical bytes, signing, verification that raises."""

from __future__ import annotations

import hashlib

import nacl.signing
import pytest

from homewarden.crypto.signing import (
    SignedTreeHead,
    TreeHead,
    generate_log_key,
    key_id,
    log_key_from_seed,
    log_key_seed,
    log_public_key,
    log_public_key_from_bytes,
    sign_tree_head,
    verify_tree_head,
)
from homewarden.errors import InvalidSignatureError, VerificationError

ROOT = hashlib.sha256(b"root").digest()


def _head(key, size=7, ts=1_700_000_000_123):
    return TreeHead(size, ROOT, ts, key_id(log_public_key(key)))


def test_key_id_is_sha256_of_the_raw_public_key() -> None:
    key = generate_log_key()
    public = log_public_key(key)
    assert key_id(public) == hashlib.sha256(bytes(public)).digest()
    assert len(bytes(public)) == 32


def test_seed_round_trip_gives_the_same_key() -> None:
    key = generate_log_key()
    again = log_key_from_seed(log_key_seed(key))
    assert bytes(log_public_key(again)) == bytes(log_public_key(key))
    with pytest.raises(VerificationError, match="32 bytes"):
        log_key_from_seed(b"short")


def test_signed_bytes_layout_is_fixed() -> None:
    kid = bytes(range(32))
    head = TreeHead(0x0102, ROOT, 0x0A0B, kid)
    raw = head.signed_bytes()
    label = b"homewarden/audit-tree-head/v1\x00"
    assert raw[: len(label)] == label
    body = raw[len(label) :]
    assert body[:8] == (0x0102).to_bytes(8, "big")
    assert body[8:16] == (0x0A0B).to_bytes(8, "big")
    assert body[16:48] == ROOT
    assert body[48:] == kid
    assert len(raw) == len(label) + 80


def test_sign_and_verify_with_rotated_keys_known() -> None:
    old, new = generate_log_key(), generate_log_key()
    keys = {key_id(log_public_key(k)): log_public_key(k) for k in (old, new)}
    for k in (old, new):
        verify_tree_head(sign_tree_head(_head(k), k), keys)


def test_every_field_is_covered_by_the_signature() -> None:
    key = generate_log_key()
    sth = sign_tree_head(_head(key), key)
    keys = {sth.key_id: log_public_key(key)}
    h = sth.head
    changed = [
        TreeHead(h.tree_size + 1, h.root_hash, h.timestamp_ms, h.key_id),
        TreeHead(h.tree_size, hashlib.sha256(b"other").digest(), h.timestamp_ms, h.key_id),
        TreeHead(h.tree_size, h.root_hash, h.timestamp_ms + 1, h.key_id),
    ]
    for head in changed:
        with pytest.raises(InvalidSignatureError, match="does not verify"):
            verify_tree_head(SignedTreeHead(head, sth.signature), keys)
    flipped = bytes([sth.signature[0] ^ 1]) + sth.signature[1:]
    with pytest.raises(InvalidSignatureError):
        verify_tree_head(SignedTreeHead(h, flipped), keys)


def test_unknown_or_mislabelled_key_raises() -> None:
    key, other = generate_log_key(), generate_log_key()
    sth = sign_tree_head(_head(key), key)
    with pytest.raises(InvalidSignatureError, match="unknown key"):
        verify_tree_head(sth, {})
    with pytest.raises(InvalidSignatureError, match="another id"):
        verify_tree_head(sth, {sth.key_id: log_public_key(other)})
    with pytest.raises(InvalidSignatureError, match="another key"):
        sign_tree_head(_head(key), other)


def test_a_plain_signature_over_other_bytes_does_not_pass() -> None:
    # The label separates tree-head signatures from any other use of the key.
    key = generate_log_key()
    head = _head(key)
    body = head.signed_bytes()[len(b"homewarden/audit-tree-head/v1\x00") :]
    raw = nacl.signing.SigningKey(log_key_seed(key)).sign(body).signature
    with pytest.raises(InvalidSignatureError):
        verify_tree_head(SignedTreeHead(head, raw), {head.key_id: log_public_key(key)})


def test_json_round_trip_and_malformed_json() -> None:
    key = generate_log_key()
    sth = sign_tree_head(_head(key), key)
    data = sth.to_json()
    assert SignedTreeHead.from_json(data) == sth
    assert data["root_hash"] == ROOT.hex()
    bad = [
        {**data, "extra": 1},
        {k: v for k, v in data.items() if k != "signature"},
        {**data, "root_hash": "zz"},
        {**data, "root_hash": "00"},
        {**data, "signature": "!!"},
        {**data, "tree_size": -1},
        {**data, "tree_size": True},
        {**data, "timestamp_ms": 1.5},
        [],
    ]
    for item in bad:
        with pytest.raises(VerificationError):
            SignedTreeHead.from_json(item)


def test_public_key_from_bytes() -> None:
    key = generate_log_key()
    raw = bytes(log_public_key(key))
    assert bytes(log_public_key_from_bytes(raw)) == raw
    with pytest.raises(InvalidSignatureError):
        log_public_key_from_bytes(raw[:31])
