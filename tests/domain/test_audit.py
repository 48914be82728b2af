"""Audit entries: tags, canonical JSON leaves, parsing back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homewarden.domain.audit import (
    Actor,
    ActorKind,
    AuditEntry,
    AuditTag,
    Subject,
    canonical_json,
    epoch_ms,
)
from homewarden.domain.permissions import Principal, PrincipalKind
from homewarden.errors import InvalidRequestError, VerificationError

OP = Actor(ActorKind.LOCAL_OPERATOR, "127.0.0.1")


def _entry(**over) -> AuditEntry:
    fields = {
        "index": 41,
        "time_ms": 1_700_003_000_123,
        "actor": OP,
        "action": AuditTag.FOOTAGE_CLIP_DOWNLOAD,
        "subject": Subject("home", "front", 1_700_002_795_000, 1_700_002_805_000),
        "reason": "api",
    }
    fields.update(over)
    return AuditEntry(**fields)


def test_tags_are_source_subject_action_and_sorted() -> None:
    values = [t.value for t in AuditTag]
    assert values == sorted(values)
    for v in values:
        parts = v.split(":")
        assert len(parts) == 3, v
        assert all(parts), v


def test_leaf_is_canonical_json() -> None:
    leaf = _entry().leaf()
    assert leaf == (
        b'{"action":"footage:clip:download","actor":{"id":"127.0.0.1","kind":"local_operator"},'
        b'"index":41,"reason":"api","subject":{"camera":"front","end_ms":1700002805000,'
        b'"event":null,"household":"home","key":null,"request":null,'
        b'"start_ms":1700002795000},"time_ms":1700003000123,"v":1}'
    )


def test_leaf_is_utf8_not_ascii_escapes() -> None:
    leaf = _entry(reason="Überprüfung: 監査").leaf()
    assert "Überprüfung: 監査".encode() in leaf
    assert b"\\u" not in leaf


@given(
    reason=st.text(min_size=1, max_size=60),
    index=st.integers(0, 2**40),
    event=st.none() | st.integers(0, 2**31),
)
def test_from_leaf_round_trips(reason: str, index: int, event: int | None) -> None:
    entry = _entry(reason=reason, index=index, subject=Subject("home", "front", 1, 2, event))
    assert AuditEntry.from_leaf(entry.leaf()) == entry


def test_from_leaf_rejects_non_canonical_or_foreign_leaves() -> None:
    good = _entry().to_json()
    bad = [
        json.dumps(good).encode(),  # spaces
        json.dumps(good, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        .replace("api", "\\u0061pi")
        .encode(),
        canonical_json({**good, "v": 2}),
        canonical_json({**good, "extra": 1}),
        canonical_json({**good, "action": "footage:clip:steal"}),
        canonical_json({**good, "actor": {"id": "x", "kind": "alien"}}),
        canonical_json({**good, "subject": {**good["subject"], "end_ms": 1}}),
        b"\xff",
        b"[]",
    ]
    for leaf in bad:
        with pytest.raises(VerificationError):
            AuditEntry.from_leaf(leaf)


def test_canonical_json_holds_integers_only() -> None:
    assert canonical_json({"b": [1, None, True], "a": "x"}) == b'{"a":"x","b":[1,null,true]}'
    for value in ({"t": 1.5}, {"t": float("nan")}, [float("inf")], {"x": object()}):
        with pytest.raises(InvalidRequestError):
            canonical_json(value)


def test_entry_validation() -> None:
    with pytest.raises(InvalidRequestError):
        _entry(reason="")
    with pytest.raises(InvalidRequestError):
        _entry(reason="x" * 501)
    with pytest.raises(InvalidRequestError):
        _entry(index=-1)
    with pytest.raises(InvalidRequestError):
        Subject("home", "front", 10, 5)
    with pytest.raises(InvalidRequestError):
        Subject("home", "front", 10, None)
    with pytest.raises(InvalidRequestError):
        Subject("")
    with pytest.raises(InvalidRequestError):
        Actor(ActorKind.USER, "")


def test_epoch_ms_rounding() -> None:
    assert epoch_ms(1.0004) == 1000
    assert epoch_ms(1.0006) == 1001
    assert epoch_ms(1.0009, rounding="floor") == 1000
    assert epoch_ms(1.0001, rounding="ceil") == 1001
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(InvalidRequestError):
            epoch_ms(bad)


def test_actor_of_principal() -> None:
    local = Actor.of_principal(Principal(PrincipalKind.LOCAL_OPERATOR, "::1"))
    assert local == Actor(ActorKind.LOCAL_OPERATOR, "::1")
    with pytest.raises(InvalidRequestError):
        Actor.of_principal(Principal(PrincipalKind.ANONYMOUS, "203.0.113.5"))
