"""The audit log service on SQLite and PostgreSQL: appends, signed heads, proofs, keys, and
tampering done straight to the database, each named by its first bad index."""

from __future__ import annotations

import itertools
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from homewarden.crypto import merkle
from homewarden.crypto.signing import (
    SignedTreeHead,
    TreeHead,
    generate_log_key,
    key_id,
    log_public_key,
    sign_tree_head,
    verify_tree_head,
)
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag, Subject
from homewarden.errors import (
    InvalidRequestError,
    InvalidSignatureError,
    LogTamperedError,
    NotFoundError,
    StorageError,
)
from homewarden.services.audit import PUBLIC_KEYS_FILE, SIGNING_KEY_FILE, AuditLog
from homewarden.store.index import Index

OP = Actor(ActorKind.LOCAL_OPERATOR, "127.0.0.1")
T0 = 1_700_002_795.0


class Clock:
    """Deterministic time: one millisecond per call, from T0."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def log(index: Index, database_url: str, keys_dir: Path) -> Iterator[AuditLog]:
    with AuditLog.open(database_url, keys_dir, clock=Clock()) as audit:
        yield audit


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """A separate connection to the same database, for editing it behind the log's back."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def fill(log: AuditLog, n: int, *, camera: str = "front") -> None:
    for i in range(n):
        log.append(
            AuditTag.FOOTAGE_CLIP_DOWNLOAD,
            OP,
            "api",
            camera=camera,
            start=T0 + i,
            end=T0 + i + 5.0,
        )


def sql(db: Engine, statement: str, **params: object) -> None:
    with db.begin() as conn:
        conn.execute(text(statement), params)


def leaf_of(db: Engine, index: int) -> bytes:
    with db.connect() as conn:
        return bytes(
            conn.execute(
                text("SELECT leaf FROM audit_entries WHERE idx = :i"), {"i": index}
            ).scalar_one()
        )


def forged(index: int, reason: str = "nothing to see") -> tuple[bytes, bytes]:
    """An entry an attacker writes: well-formed, stating ``index``, with its right hash."""
    entry = AuditEntry(
        index,
        int(T0 * 1000),
        OP,
        AuditTag.FOOTAGE_SNAPSHOT_VIEW,
        Subject("home", "front", int(T0 * 1000), int(T0 * 1000)),
        reason,
    )
    leaf = entry.leaf()
    return leaf, merkle.leaf_hash(leaf)


def shift(db: Engine, from_index: int, by: int) -> None:
    """Renumber entries ``>= from_index`` by ``by`` (two steps: the primary key is unique)."""
    sql(db, "UPDATE audit_entries SET idx = idx + 1000000 WHERE idx >= :k", k=from_index)
    sql(db, "UPDATE audit_entries SET idx = idx - 1000000 + :by WHERE idx >= 1000000", by=by)


def rewrite_nodes(db: Engine) -> None:
    """Recompute every stored node from the stored leaf hashes (a thorough attacker)."""
    with db.begin() as conn:
        hashes = [
            bytes(h)
            for h in conn.execute(
                text("SELECT leaf_hash FROM audit_entries ORDER BY idx")
            ).scalars()
        ]
        compact = merkle.CompactRange()
        for h in hashes:
            for (level, idx), node in compact.append(h):
                conn.execute(
                    text("UPDATE audit_nodes SET hash = :h WHERE level = :l AND idx = :i"),
                    {"h": node, "l": level, "i": idx},
                )


def tamper_error(log: AuditLog, **kw: object) -> LogTamperedError:
    with pytest.raises(LogTamperedError) as info:
        log.verify(**kw)  # type: ignore[arg-type]
    return info.value


# -- appending ----------------------------------------------------------------------------


def test_append_returns_index_and_leaf_hash_and_round_trips(log: AuditLog) -> None:
    first = log.append(
        AuditTag.FOOTAGE_CLIP_DOWNLOAD,
        OP,
        "api",
        camera="front",
        start=T0 + 0.0004,
        end=T0 + 5.0001,
        event=7,
    )
    second = log.append(AuditTag.FOOTAGE_SNAPSHOT_VIEW, OP, "api", camera="front", start=T0, end=T0)
    assert (first.index, second.index) == (0, 1)
    assert log.size() == 2
    entry = log.entry(0)
    assert merkle.leaf_hash(entry.leaf()) == first.leaf_hash
    assert entry.action is AuditTag.FOOTAGE_CLIP_DOWNLOAD
    assert entry.actor == OP
    assert entry.subject == Subject(
        "home", "front", int(T0 * 1000), int(T0 * 1000) + 5001, event=7
    )  # the range widened outwards to whole milliseconds
    assert entry.time_ms == round((T0 + 0.001) * 1000)
    assert log.entry(1).time_ms > entry.time_ms
    with pytest.raises(NotFoundError):
        log.entry(2)


def test_append_rejects_malformed_fields_without_writing(log: AuditLog) -> None:
    with pytest.raises(InvalidRequestError):
        log.append(AuditTag.FOOTAGE_CLIP_DOWNLOAD, OP, "", camera="front")
    with pytest.raises(InvalidRequestError):
        log.append(AuditTag.FOOTAGE_CLIP_DOWNLOAD, OP, "api", start=T0 + 5, end=T0)
    with pytest.raises(InvalidRequestError):
        log.append(AuditTag.FOOTAGE_CLIP_DOWNLOAD, OP, "api", start=T0)
    assert log.size() == 0


def test_concurrent_appends_get_distinct_indexes(log: AuditLog) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            fill(log, 25, camera=f"cam{k}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert log.size() == 200
    entries = [log.entry(i) for i in range(200)]
    assert sorted(e.index for e in entries) == list(range(200))
    assert {e.subject.camera for e in entries} == {f"cam{k}" for k in range(8)}
    log.sign_tree_head()
    assert log.verify().size == 200


def test_processes_append_to_one_log_without_races(
    index: Index, database_url: str, keys_dir: Path
) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from homewarden.services.audit import AuditLog\n"
        "from homewarden.domain.audit import Actor, ActorKind, AuditTag\n"
        "op = Actor(ActorKind.LOCAL_OPERATOR, sys.argv[3])\n"
        "with AuditLog.open(sys.argv[1], Path(sys.argv[2])) as log:\n"
        "    for i in range(60):\n"
        "        log.append(AuditTag.FOOTAGE_CLIP_DOWNLOAD, op, 'api', camera='front')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, database_url, str(keys_dir), f"p{k}"])
        for k in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    with AuditLog.open(database_url, keys_dir) as log:
        assert log.size() == 180
        by_actor = [log.entry(i).actor.id for i in range(180)]
        assert sorted(set(by_actor)) == ["p0", "p1", "p2"]
        log.sign_tree_head()
        assert log.verify().size == 180


# -- signed tree heads and proofs ---------------------------------------------------------


def test_tree_heads_sign_the_root_of_the_entries(log: AuditLog) -> None:
    fill(log, 13)
    sth = log.sign_tree_head()
    leaves = [log.entry(i).leaf() for i in range(13)]
    assert sth.tree_size == 13
    assert sth.root_hash == merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in leaves])
    verify_tree_head(sth, log.public_keys())
    assert log.latest_tree_head() == sth
    assert log.sign_if_grown() is None
    fill(log, 1)
    grown = log.sign_if_grown()
    assert grown is not None
    assert grown.tree_size == 14
    assert [h.tree_size for h in log.tree_heads()] == [13, 14]
    assert SignedTreeHead.from_json(json.loads(json.dumps(grown.to_json()))) == grown


def test_inclusion_and_consistency_proofs_verify_against_signed_heads(log: AuditLog) -> None:
    heads = []
    for batch in (5, 8, 1, 19):
        fill(log, batch)
        heads.append(log.sign_tree_head())
    for head in heads:
        for i in range(head.tree_size):
            proof = log.inclusion_proof(i, head.tree_size)
            assert proof.root_hash == head.root_hash
            merkle.verify_inclusion(i, head.tree_size, proof.leaf_hash, proof.path, head.root_hash)
            assert proof.to_json()["entry"]["index"] == i
    for old, new in itertools.pairwise(heads):
        cons = log.consistency_proof(old.tree_size, new.tree_size)
        merkle.verify_consistency(
            old.tree_size, new.tree_size, old.root_hash, new.root_hash, cons.path
        )
    with pytest.raises(InvalidRequestError):
        log.inclusion_proof(33, 33)
    with pytest.raises(InvalidRequestError):
        log.inclusion_proof(0, 34)
    with pytest.raises(InvalidRequestError):
        log.consistency_proof(20, 10)


def test_verify_reports_what_it_checked(log: AuditLog) -> None:
    assert log.verify().size == 0
    fill(log, 20)
    log.sign_tree_head()
    fill(log, 3)
    report = log.verify()
    assert report.size == 23
    assert report.tree_heads == 1
    assert report.unsigned == 3
    assert report.nodes == 23 - bin(23).count("1")  # every complete interior node
    assert report.root_hash == log.root_hash(23)


# -- tampering, done straight to the database ---------------------------------------------


@pytest.fixture
def signed(log: AuditLog) -> AuditLog:
    """20 entries under a head of size 10 and one of size 20, 4 more unsigned."""
    fill(log, 10)
    log.sign_tree_head()
    fill(log, 10)
    log.sign_tree_head()
    fill(log, 4)
    log.verify()
    return log


def test_changed_leaf_is_named(signed: AuditLog, db: Engine) -> None:
    leaf = leaf_of(db, 13).replace(b'"reason":"api"', b'"reason":"apx"')
    sql(db, "UPDATE audit_entries SET leaf = :l WHERE idx = 13", l=leaf)
    err = tamper_error(signed)
    assert err.first_bad_index == 13
    assert "entry 13" in str(err)
    assert "first bad index is 13" in str(err)


def test_changed_leaf_beyond_every_head_is_named(signed: AuditLog, db: Engine) -> None:
    leaf = leaf_of(db, 22).replace(b'"camera":"front"', b'"camera":"porch"')
    sql(db, "UPDATE audit_entries SET leaf = :l WHERE idx = 22", l=leaf)
    assert tamper_error(signed).first_bad_index == 22


def test_changed_leaf_and_hash_is_pinned_by_the_stored_tree(signed: AuditLog, db: Engine) -> None:
    leaf = leaf_of(db, 14).replace(b'"reason":"api"', b'"reason":"apx"')
    sql(
        db,
        "UPDATE audit_entries SET leaf = :l, leaf_hash = :h WHERE idx = 14",
        l=leaf,
        h=merkle.leaf_hash(leaf),
    )
    err = tamper_error(signed)
    # The leaf's own hash was rewritten, so only the signed pair node above it is trusted:
    # the first bad index is one of the two entries under it.
    assert err.first_bad_index is None
    assert err.bad_range == (14, 16)
    assert "14..15" in str(err)


def test_everything_rewritten_is_bounded_by_the_signed_heads(signed: AuditLog, db: Engine) -> None:
    leaf = leaf_of(db, 14).replace(b'"reason":"api"', b'"reason":"apx"')
    sql(
        db,
        "UPDATE audit_entries SET leaf = :l, leaf_hash = :h WHERE idx = 14",
        l=leaf,
        h=merkle.leaf_hash(leaf),
    )
    rewrite_nodes(db)
    err = tamper_error(signed)
    # entries 0..9 still match the head of size 10; the head of size 20 no longer matches
    assert err.first_bad_index is None
    assert err.bad_range == (10, 20)


def test_deleted_row_is_named(signed: AuditLog, db: Engine) -> None:
    sql(db, "DELETE FROM audit_entries WHERE idx = 6")
    err = tamper_error(signed)
    assert err.first_bad_index == 6
    assert "missing" in str(err)


def test_deleted_row_with_the_rest_renumbered_is_named(signed: AuditLog, db: Engine) -> None:
    sql(db, "DELETE FROM audit_entries WHERE idx = 6")
    shift(db, 7, -1)
    sql(db, "UPDATE audit_state SET size = size - 1")
    err = tamper_error(signed)
    assert err.first_bad_index == 6
    assert "out of place" in str(err)


def test_deleted_tail_under_a_head_is_named(signed: AuditLog, db: Engine) -> None:
    sql(db, "DELETE FROM audit_entries WHERE idx >= 17")
    sql(db, "UPDATE audit_state SET size = 17")
    err = tamper_error(signed)
    assert err.first_bad_index == 17
    assert "signed head covers 20" in str(err)
    with pytest.raises(LogTamperedError, match="entry 17 is missing"):
        signed.sign_tree_head()  # never vouches for the shorter log


def test_inserted_row_is_named(signed: AuditLog, db: Engine) -> None:
    shift(db, 8, +1)
    leaf, h = forged(8)
    sql(db, "INSERT INTO audit_entries (idx, leaf, leaf_hash) VALUES (8, :l, :h)", l=leaf, h=h)
    sql(db, "UPDATE audit_state SET size = size + 1")
    err = tamper_error(signed)
    # Entry 9 (the old 8) is the first to state a wrong index, but the signed heads show the
    # damage starts at 8, the forged entry that states its place correctly.
    assert err.first_bad_index == 8


def test_row_inserted_beyond_the_recorded_size_is_named(signed: AuditLog, db: Engine) -> None:
    leaf, h = forged(24)
    sql(db, "INSERT INTO audit_entries (idx, leaf, leaf_hash) VALUES (24, :l, :h)", l=leaf, h=h)
    err = tamper_error(signed)
    assert err.first_bad_index == 24
    assert "beyond the recorded size" in str(err)


def test_swapped_rows_are_named(signed: AuditLog, db: Engine) -> None:
    sql(db, "UPDATE audit_entries SET idx = 1000000 WHERE idx = 4")
    sql(db, "UPDATE audit_entries SET idx = 4 WHERE idx = 11")
    sql(db, "UPDATE audit_entries SET idx = 11 WHERE idx = 1000000")
    err = tamper_error(signed)
    assert err.first_bad_index == 4
    assert "states index 11" in str(err)


def test_swapped_contents_restated_are_named_through_the_heads(
    signed: AuditLog, db: Engine
) -> None:
    # Swap two entries and rewrite each to state its new place, with fresh leaf hashes.
    a, b = (AuditEntry.from_leaf(leaf_of(db, i)) for i in (3, 5))
    for place, entry in ((3, b), (5, a)):
        moved = AuditEntry(place, entry.time_ms, entry.actor, entry.action, entry.subject, "x")
        sql(
            db,
            "UPDATE audit_entries SET leaf = :l, leaf_hash = :h WHERE idx = :i",
            l=moved.leaf(),
            h=merkle.leaf_hash(moved.leaf()),
            i=place,
        )
    err = tamper_error(signed)
    assert err.bad_range is not None
    assert err.bad_range[0] <= 3 < err.bad_range[1]
    assert err.bad_range[1] - err.bad_range[0] <= 2


def test_stored_node_tampering_is_reported(signed: AuditLog, db: Engine) -> None:
    sql(db, "UPDATE audit_nodes SET hash = :h WHERE level = 2 AND idx = 5", h=b"\x00" * 32)
    err = tamper_error(signed)
    assert err.first_bad_index is None
    assert err.bad_range == (20, 24)
    assert "tree node (2, 5)" in str(err)


def test_missing_stored_node_is_reported(signed: AuditLog, db: Engine) -> None:
    sql(db, "DELETE FROM audit_nodes WHERE level = 1 AND idx = 11")
    err = tamper_error(signed)
    assert "(1, 11)" in str(err)
    assert "missing" in str(err)


def test_signature_swap_between_heads_fails(signed: AuditLog, db: Engine) -> None:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT id, signature FROM audit_tree_heads ORDER BY id")).all()
    (id1, sig1), (id2, sig2) = rows
    sql(db, "UPDATE audit_tree_heads SET signature = :s WHERE id = :i", s=bytes(sig2), i=id1)
    sql(db, "UPDATE audit_tree_heads SET signature = :s WHERE id = :i", s=bytes(sig1), i=id2)
    with pytest.raises(InvalidSignatureError, match="size 10"):
        signed.verify()


def test_forged_head_row_fails(signed: AuditLog, db: Engine) -> None:
    sql(
        db,
        "UPDATE audit_tree_heads SET root = :r WHERE tree_size = 20",
        r=merkle.leaf_hash(b"forged"),
    )
    with pytest.raises(InvalidSignatureError, match="size 20"):
        signed.verify()
    with pytest.raises(InvalidSignatureError):
        signed.sign_tree_head()  # a new head is never built on an unverified one


def test_sign_tree_head_refuses_to_vouch_for_a_tampered_tree(signed: AuditLog, db: Engine) -> None:
    leaf = leaf_of(db, 21).replace(b'"reason":"api"', b'"reason":"apx"')
    sql(db, "UPDATE audit_entries SET leaf = :l WHERE idx = 21", l=leaf)
    with pytest.raises(LogTamperedError, match="entry 21"):
        signed.sign_tree_head()
    original = leaf.replace(b'"reason":"apx"', b'"reason":"api"')
    sql(db, "UPDATE audit_entries SET leaf = :l WHERE idx = 21", l=original)
    signed.verify()
    # the stored tree under the last head (size 20: nodes (4, 0) and (2, 4)) altered
    sql(db, "UPDATE audit_nodes SET hash = :h WHERE level = 4 AND idx = 0", h=b"\x01" * 32)
    with pytest.raises(LogTamperedError, match="no longer has the root"):
        signed.sign_tree_head()


def test_from_sth_catches_a_log_rewritten_and_resigned(signed: AuditLog, db: Engine) -> None:
    kept = SignedTreeHead.from_json(signed.tree_heads()[0].to_json())  # saved elsewhere
    assert signed.verify(kept).from_sth == kept
    # An attacker with the database and the key rewrites entry 3, every hash above it, drops
    # the old heads and signs a new one: the log is consistent with itself again...
    leaf = leaf_of(db, 3).replace(b'"reason":"api"', b'"reason":"apx"')
    sql(
        db,
        "UPDATE audit_entries SET leaf = :l, leaf_hash = :h WHERE idx = 3",
        l=leaf,
        h=merkle.leaf_hash(leaf),
    )
    rewrite_nodes(db)
    sql(db, "DELETE FROM audit_tree_heads")
    signed.sign_tree_head()
    signed.verify()
    # ...but not with the head kept elsewhere.
    err = tamper_error(signed, from_sth=kept)
    assert err.bad_range is not None
    assert err.bad_range[0] <= 3 < err.bad_range[1]


def test_from_sth_beyond_the_log_or_by_an_unknown_key(signed: AuditLog, db: Engine) -> None:
    big = signed.sign_tree_head()
    sql(db, "DELETE FROM audit_entries WHERE idx >= 22")
    sql(db, "DELETE FROM audit_tree_heads WHERE tree_size = 24")
    sql(db, "UPDATE audit_state SET size = 22")
    assert tamper_error(signed, from_sth=big).first_bad_index == 22
    stranger = generate_log_key()
    head = TreeHead(10, signed.root_hash(10), 1, key_id(log_public_key(stranger)))
    with pytest.raises(InvalidSignatureError, match="unknown key"):
        signed.verify(sign_tree_head(head, stranger))


# -- keys ---------------------------------------------------------------------------------


def test_first_run_key_is_0600_listed_and_logged(log: AuditLog, keys_dir: Path) -> None:
    kid = log.ensure_key()
    key_file = keys_dir / SIGNING_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert len(key_file.read_bytes()) == 32
    listed = json.loads((keys_dir / PUBLIC_KEYS_FILE).read_text())["log_public_keys"]
    assert [k["key_id"] for k in listed] == [kid.hex()]
    assert listed[0]["retired_ms"] is None
    entry = log.entry(0)
    assert entry.action is AuditTag.SYSTEM_KEY_CREATE
    assert entry.subject.key == kid.hex()
    assert entry.actor.kind is ActorKind.SYSTEM
    # a second process on the same keys finds the key and does not log a second creation
    assert log.ensure_key() == kid
    assert log.size() == 1


def test_two_logs_starting_together_share_one_key(
    index: Index, database_url: str, keys_dir: Path
) -> None:
    ids: list[bytes] = []
    logs = [AuditLog.open(database_url, keys_dir) for _ in range(4)]
    threads = [threading.Thread(target=lambda lg=lg: ids.append(lg.ensure_key())) for lg in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lg in logs:
        lg.close()
    assert len(set(ids)) == 1
    with AuditLog.open(database_url, keys_dir) as log:
        assert log.size() == 1  # one system:key:create


def test_loose_key_file_mode_is_refused(log: AuditLog, keys_dir: Path, database_url: str) -> None:
    log.ensure_key()
    (keys_dir / SIGNING_KEY_FILE).chmod(0o644)
    with AuditLog.open(database_url, keys_dir) as fresh, pytest.raises(StorageError, match="0600"):
        fresh.sign_tree_head()


def test_rotation_keeps_old_heads_verifiable(log: AuditLog, keys_dir: Path) -> None:
    old_id = log.ensure_key()
    fill(log, 6)
    before = log.sign_tree_head()
    old_file = (keys_dir / SIGNING_KEY_FILE).read_bytes()
    rotated_from, new_id = log.rotate_key(OP, "scheduled rotation")
    assert rotated_from == old_id
    assert new_id != old_id
    assert (keys_dir / SIGNING_KEY_FILE).read_bytes() != old_file
    assert stat.S_IMODE((keys_dir / SIGNING_KEY_FILE).stat().st_mode) == 0o600
    listed = {
        k["key_id"]: k
        for k in json.loads((keys_dir / PUBLIC_KEYS_FILE).read_text())["log_public_keys"]
    }
    assert listed[old_id.hex()]["retired_ms"] is not None
    assert listed[new_id.hex()]["retired_ms"] is None
    rotation = log.entry(log.size() - 1)
    assert rotation.action is AuditTag.SYSTEM_KEY_ROTATE
    assert rotation.subject.key == new_id.hex()
    assert rotation.reason == "scheduled rotation"
    fill(log, 3)
    after = log.sign_tree_head()
    assert before.key_id == old_id
    assert after.key_id == new_id
    report = log.verify(before)
    assert report.keys == 2
    assert {h.key_id for h in log.tree_heads()} == {old_id, new_id}
