"""The audit log: the one writer of audit entries, its signed tree heads, proofs and checks.

DESIGN.md flow 7: every access to footage is an entry of an append-only log shaped as an
RFC 9162 Merkle tree (:mod:`homewarden.crypto.merkle`), with heads signed by the deployment's
Ed25519 key (:mod:`homewarden.crypto.signing`). Services call :meth:`AuditLog.append`; nothing
else writes entries (the web layer passes the caller down, it never appends).

Keys live in ``<data_dir>/keys`` (:attr:`homewarden.config.Settings.keys_dir`):

* ``log_signing_key`` - the 32-byte Ed25519 seed, mode 0600, created at first run (atomically,
  ``O_EXCL``; :mod:`homewarden.store.keyfiles`), replaced by :meth:`AuditLog.rotate_key`;
* ``log_public_keys.json`` - every log public key this deployment has used, current and
  retired, so heads signed before a rotation still verify::

      {"log_public_keys": [{"key_id": "<hex sha256 of the key>", "public_key": "<hex>",
                            "created_ms": 1700000000000, "retired_ms": null}]}

Trust: a signed tree head is as good as the secrecy of the key that signed it and the
authenticity of the public key a checker uses. ``verify --from-sth`` with a head saved
elsewhere (printed by ``homewarden audit sth``) checks the log against a head the database
cannot rewrite.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homewarden.crypto import merkle
from homewarden.crypto.signing import (
    LogPublicKey,
    LogSigningKey,
    SignedTreeHead,
    TreeHead,
    generate_log_key,
    key_id,
    log_key_from_seed,
    log_key_seed,
    log_public_key,
    log_public_key_from_bytes,
    sign_manifest,
    sign_tree_head,
    verify_tree_head,
)
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag, Subject, epoch_ms
from homewarden.errors import (
    InvalidProofError,
    InvalidRequestError,
    LogTamperedError,
    NotFoundError,
    StorageError,
    VerificationError,
)
from homewarden.store import keyfiles
from homewarden.store.audit_store import AuditStore, StoredTreeHead

log = logging.getLogger(__name__)

SIGNING_KEY_FILE = "log_signing_key"
PUBLIC_KEYS_FILE = "log_public_keys.json"
#: Most entries one group commit writes (the rest wait for the next).
MAX_GROUP = 512
#: The actor of entries the system itself writes (key creation).
SYSTEM_ACTOR = Actor(ActorKind.SYSTEM, "homewarden")


@dataclass(frozen=True, slots=True)
class Appended:
    """Where :meth:`AuditLog.append` put an entry: its ``index`` and 32-byte ``leaf_hash``."""

    index: int
    leaf_hash: bytes


@dataclass(slots=True)
class _Pending:
    """An entry waiting for a group commit, and how that went."""

    actor: Actor
    action: AuditTag
    subject: Subject
    reason: str
    done: bool = False
    result: Appended | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """RFC 9162 inclusion proof of entry ``index`` (its ``leaf`` bytes and ``leaf_hash``) in the
    tree of ``tree_size`` entries whose root is ``root_hash``; ``path`` leaf side first."""

    index: int
    tree_size: int
    leaf: bytes
    leaf_hash: bytes
    path: tuple[bytes, ...]
    root_hash: bytes

    def verify(self) -> None:
        """Check the leaf hash and the path against :attr:`root_hash`.

        Raises:
            InvalidProofError: they do not verify.
        """
        if merkle.leaf_hash(self.leaf) != self.leaf_hash:
            raise InvalidProofError(f"entry {self.index} does not hash to its leaf hash")
        merkle.verify_inclusion(
            self.index, self.tree_size, self.leaf_hash, self.path, self.root_hash
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``leaf`` is the exact leaf bytes in base64 (what the leaf hash covers),
        ``entry`` the same parsed for reading; hashes in hex."""
        try:
            entry: Any = json.loads(self.leaf)
        except ValueError:
            entry = None
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf": base64.b64encode(self.leaf).decode("ascii"),
            "entry": entry,
            "leaf_hash": self.leaf_hash.hex(),
            "path": [h.hex() for h in self.path],
            "root_hash": self.root_hash.hex(),
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """RFC 9162 consistency proof that the tree of ``new_size`` (``new_root``) extends the
    tree of ``old_size`` (``old_root``)."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    path: tuple[bytes, ...]

    def verify(self) -> None:
        """Raises InvalidProofError unless the proof verifies."""
        merkle.verify_consistency(
            self.old_size, self.new_size, self.old_root, self.new_root, self.path
        )

    def to_json(self) -> dict[str, Any]:
        """JSON form, hashes in hex."""
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": self.old_root.hex(),
            "new_root": self.new_root.hex(),
            "path": [h.hex() for h in self.path],
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :meth:`AuditLog.verify` checked: ``size`` entries recomputed to ``root_hash``,
    ``tree_heads`` signed heads (and ``from_sth``) matched, ``nodes`` stored tree nodes
    matched, ``unsigned`` entries after the newest signed head (covered by the next one)."""

    size: int
    root_hash: bytes
    tree_heads: int
    nodes: int
    keys: int
    newest_head: SignedTreeHead | None
    unsigned: int
    from_sth: SignedTreeHead | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ok": True,
            "size": self.size,
            "root_hash": self.root_hash.hex(),
            "tree_heads_checked": self.tree_heads,
            "nodes_checked": self.nodes,
            "public_keys": self.keys,
            "newest_tree_head": self.newest_head.to_json() if self.newest_head else None,
            "entries_after_newest_head": self.unsigned,
            "from_sth": self.from_sth.to_json() if self.from_sth else None,
        }


def _sth(row: StoredTreeHead) -> SignedTreeHead:
    try:
        head = TreeHead(row.tree_size, row.root, row.timestamp_ms, row.key_id)
    except VerificationError as exc:
        raise LogTamperedError(
            f"stored tree head #{row.id} is malformed: {exc}", first_bad_index=None
        ) from exc
    return SignedTreeHead(head, row.signature)


class AuditLog:
    """The audit log over ``store`` with its keys in ``keys_dir``.

    Args:
        store: the audit tables (:class:`AuditStore`, opened on the migrated index database).
        keys_dir: where the signing key and the public keys live (created, mode 0700).
        household: the household id written into entries' subjects.
        clock: now as UTC epoch seconds.

    Thread-safe; several processes may share one database (the store serialises appends).
    """

    def __init__(
        self,
        store: AuditStore,
        keys_dir: Path,
        *,
        household: str = "home",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._keys_dir = keys_dir
        self._household = household
        self._clock = clock
        self._queue_cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        self._key_lock = threading.Lock()
        self._compact: merkle.CompactRange | None = None

    @classmethod
    def open(
        cls,
        db_url: str,
        keys_dir: Path,
        *,
        household: str = "home",
        clock: Callable[[], float] = time.time,
    ) -> AuditLog:
        """An audit log on the (migrated) database at ``db_url``.

        Raises:
            DatabaseError: the database cannot be opened.
        """
        return cls(AuditStore(db_url), keys_dir, household=household, clock=clock)

    def close(self) -> None:
        """Close the store's connections."""
        self._store.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def keys_dir(self) -> Path:
        """Where the keys live."""
        return self._keys_dir

    # ---------------------------------------------------------------------------------------
    # writing

    def append(
        self,
        action: AuditTag,
        actor: Actor,
        reason: str,
        *,
        camera: str | None = None,
        start: float | None = None,
        end: float | None = None,
        event: int | None = None,
        request: str | None = None,
        key: str | None = None,
        household: str | None = None,
    ) -> Appended:
        """Append an entry and return once it is durably stored.

        ``household`` is the household the entry concerns (default: the deployment's own,
        as opened).

        Group commit: callers appending at the same time (API threads) are written in one
        transaction by whichever of them arrives first, so they share one fsync; each returns
        only after the transaction holding its own entry has committed.

        ``start``/``end`` (UTC epoch seconds) are the footage range concerned, recorded in
        milliseconds widened outwards (start floored, end ceiled).

        Raises:
            InvalidRequestError: a malformed field (empty reason, end before start, ...).
            DatabaseError: the write failed; nothing was appended.
            LogTamperedError: the stored tree cannot be extended (nodes missing).
        """
        if (start is None) != (end is None):
            raise InvalidRequestError("an audited time range needs both start and end")
        try:
            tag = AuditTag(action)
        except ValueError:
            raise InvalidRequestError(f"{action!r} is not an audit tag") from None
        subject = Subject(
            household=self._household if household is None else household,
            camera=camera,
            start_ms=None if start is None else epoch_ms(start, rounding="floor"),
            end_ms=None if end is None else epoch_ms(end, rounding="ceil"),
            event=event,
            request=request,
            key=key,
        )
        # Validate everything but the index before queueing.
        AuditEntry(0, 0, actor, tag, subject, reason)
        pending = _Pending(actor, tag, subject, reason)
        with self._queue_cv:
            self._queue.append(pending)
            while True:
                if pending.done:
                    break
                if self._committing:
                    self._queue_cv.wait()
                    continue
                # Nobody is committing: lead one group commit of everything queued.
                self._committing = True
                batch, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                self._queue_cv.release()
                try:
                    self._commit(batch)
                finally:
                    self._queue_cv.acquire()
                    self._committing = False
                    self._queue_cv.notify_all()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _commit(self, batch: list[_Pending]) -> None:
        """Write ``batch`` in one durable transaction (one fsync for all); settle each."""
        try:
            with self._store.writer() as w:
                compact = self._compact
                if compact is None or compact.size != w.size:
                    compact = self._load_compact(w.size, w.node_hashes)
                else:
                    compact = compact.copy()
                results = []
                for p in batch:
                    entry = AuditEntry(
                        index=w.size,
                        time_ms=epoch_ms(self._clock()),
                        actor=p.actor,
                        action=p.action,
                        subject=p.subject,
                        reason=p.reason,
                    )
                    leaf = entry.leaf()
                    leaf_hash = merkle.leaf_hash(leaf)
                    index = w.append(leaf, leaf_hash, compact.append(leaf_hash))
                    results.append(Appended(index, leaf_hash))
        except BaseException as exc:
            self._compact = None
            for p in batch:
                p.error = exc
                p.done = True
            if not isinstance(exc, Exception):
                raise
            return
        self._compact = compact
        for p, result in zip(batch, results, strict=True):
            p.result = result
            p.done = True

    @staticmethod
    def _load_compact(size: int, read: merkle.NodeReader) -> merkle.CompactRange:
        try:
            return merkle.CompactRange.from_nodes(size, read)
        except InvalidProofError as exc:
            raise LogTamperedError(
                f"cannot extend the audit tree of {size} entries: {exc}; run "
                "`homewarden audit verify`",
                first_bad_index=None,
                bad_range=(0, size),
            ) from exc

    # ---------------------------------------------------------------------------------------
    # reading

    def size(self) -> int:
        """Entries in the log."""
        return self._store.size()

    def entry(self, index: int) -> AuditEntry:
        """The entry at ``index``.

        Raises:
            NotFoundError: no such entry.
            LogTamperedError: the stored leaf is not a canonical entry of that index.
        """
        rows = self._store.entries(index, index + 1)
        if not rows:
            raise NotFoundError(f"no audit entry {index}")
        try:
            entry = AuditEntry.from_leaf(rows[0].leaf)
        except VerificationError as exc:
            raise LogTamperedError(f"entry {index}: {exc}", first_bad_index=index) from exc
        if entry.index != index:
            raise LogTamperedError(
                f"entry stored at {index} says it is entry {entry.index}", first_bad_index=index
            )
        return entry

    def iter_leaves(
        self, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Stored ``(index, leaf, leaf_hash)`` of entries ``start <= index < end`` (default:
        to the end) in index order, streamed; the leaves unchecked (:meth:`verify` checks).

        Raises:
            DatabaseError: the log cannot be read.
        """
        yield from self._store.iter_entries(start, end)

    def root_hash(self, size: int) -> bytes:
        """RFC 9162 root of the first ``size`` entries, from the stored tree nodes.

        Raises:
            InvalidRequestError: ``size`` exceeds the log.
        """
        self._check_size(size)
        return self._subtrees([(0, size)])[0] if size else merkle.EMPTY_ROOT

    def _check_size(self, size: int) -> int:
        current = self._store.size()
        if size < 0 or size > current:
            raise InvalidRequestError(f"tree size {size} is not in 0..{current}")
        return current

    def _subtrees(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        try:
            return merkle.subtree_hashes(ranges, self._store.node_hashes)
        except InvalidProofError as exc:
            raise LogTamperedError(
                f"the stored audit tree is incomplete: {exc}", first_bad_index=None
            ) from exc

    # ---------------------------------------------------------------------------------------
    # proofs

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        """Inclusion proof of entry ``index`` in the tree of ``tree_size`` (default: the whole
        log), built from O(log n) stored nodes in one batched read, and self-checked.

        Raises:
            InvalidRequestError: ``index`` not below ``tree_size``, or ``tree_size`` too big.
            LogTamperedError: the stored tree does not prove its own entry.
        """
        size = self._store.size() if tree_size is None else tree_size
        self._check_size(size)
        if not 0 <= index < size:
            raise InvalidRequestError(f"entry {index} is not in a tree of {size} entries")
        rows = self._store.entries(index, index + 1)
        if not rows:
            raise LogTamperedError(f"entry {index} is missing", first_bad_index=index)
        ranges = merkle.inclusion_ranges(index, size)
        *path, root = self._subtrees([*ranges, (0, size)])
        proof = InclusionProof(index, size, rows[0].leaf, rows[0].leaf_hash, tuple(path), root)
        try:
            proof.verify()
        except InvalidProofError as exc:
            raise LogTamperedError(
                f"entry {index} is not proven by the stored tree ({exc}); run "
                "`homewarden audit verify`",
                first_bad_index=None,
                bad_range=(0, size),
            ) from exc
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Consistency proof from tree size ``old_size`` to ``new_size`` (default: the whole
        log), from stored nodes, self-checked.

        Raises:
            InvalidRequestError: sizes out of order or beyond the log.
            LogTamperedError: the stored tree is not consistent with itself.
        """
        size = self._store.size() if new_size is None else new_size
        self._check_size(size)
        if not 0 <= old_size <= size:
            raise InvalidRequestError(f"old size {old_size} is not in 0..{size}")
        ranges = merkle.consistency_ranges(old_size, size)
        wanted = [*ranges, *([(0, old_size)] if old_size else []), *([(0, size)] if size else [])]
        hashes = self._subtrees(wanted)
        path = tuple(hashes[: len(ranges)])
        old_root = hashes[len(ranges)] if old_size else merkle.EMPTY_ROOT
        new_root = hashes[-1] if size else merkle.EMPTY_ROOT
        proof = ConsistencyProof(old_size, size, old_root, new_root, path)
        try:
            proof.verify()
        except InvalidProofError as exc:
            raise LogTamperedError(
                f"stored tree is not consistent from {old_size} to {size}: {exc}",
                first_bad_index=None,
                bad_range=(0, size),
            ) from exc
        return proof

    # ---------------------------------------------------------------------------------------
    # keys

    @property
    def _key_path(self) -> Path:
        return self._keys_dir / SIGNING_KEY_FILE

    @property
    def _public_path(self) -> Path:
        return self._keys_dir / PUBLIC_KEYS_FILE

    def ensure_key(self) -> bytes:
        """Load the log signing key, generating it at first run; returns its key id.

        A new key is written with mode 0600 (atomic, never overwriting), its public key added
        to ``log_public_keys.json``, and its creation appended to the log
        (``system:key:create``).

        Raises:
            StorageError: the key files cannot be read or written, or the key file's mode
                lets anyone else read it.
        """
        key, created = self._load_key()
        kid = key_id(log_public_key(key))
        if created:
            log.info("generated the audit log signing key %s", kid.hex()[:16])
            self.append(
                AuditTag.SYSTEM_KEY_CREATE,
                SYSTEM_ACTOR,
                "first run: audit log signing key generated",
                key=kid.hex(),
            )
        return kid

    def _load_key(self) -> tuple[LogSigningKey, bool]:
        # Read from the file every time (heads are signed once a minute): another process
        # may have rotated the key since.
        with self._key_lock:
            created = False
            with keyfiles.locked(self._keys_dir):
                seed = keyfiles.read_secret(self._key_path)
                if seed is None:
                    fresh = log_key_seed(generate_log_key())
                    created = keyfiles.create_secret(self._key_path, fresh)
                    seed = keyfiles.read_secret(self._key_path)
                    if seed is None:
                        raise StorageError(f"{self._key_path} vanished right after creation")
                try:
                    key = log_key_from_seed(seed)
                except VerificationError as exc:
                    raise StorageError(f"{self._key_path} is not a log signing key: {exc}") from exc
                self._register_public_key(key, retire=None)
            return key, created

    def _public_entries(self) -> list[dict[str, Any]]:
        data = keyfiles.read_json(self._public_path)
        if data is None:
            return []
        keys = data.get("log_public_keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise StorageError(f"{self._public_path} has no log_public_keys list")
        return keys

    def _register_public_key(self, key: LogSigningKey, retire: bytes | None) -> None:
        """List ``key``'s public key (and mark ``retire`` retired); call under the file lock."""
        public = log_public_key(key)
        kid = key_id(public).hex()
        entries = self._public_entries()
        now = epoch_ms(self._clock())
        changed = False
        if retire is not None:
            for e in entries:
                if e.get("key_id") == retire.hex() and e.get("retired_ms") is None:
                    e["retired_ms"] = now
                    changed = True
        if not any(e.get("key_id") == kid for e in entries):
            entries.append(
                {
                    "key_id": kid,
                    "public_key": bytes(public).hex(),
                    "created_ms": now,
                    "retired_ms": None,
                }
            )
            changed = True
        if changed:
            keyfiles.write_json(self._public_path, {"log_public_keys": entries})

    def public_keys(self) -> dict[bytes, LogPublicKey]:
        """Every log public key of this deployment (current and retired) by key id.

        Raises:
            StorageError: ``log_public_keys.json`` is unreadable or malformed.
        """
        out: dict[bytes, LogPublicKey] = {}
        for e in self._public_entries():
            try:
                public = log_public_key_from_bytes(bytes.fromhex(str(e["public_key"])))
            except (KeyError, ValueError, VerificationError) as exc:
                raise StorageError(f"{self._public_path}: bad public key entry {e!r}") from exc
            kid = key_id(public)
            if e.get("key_id") != kid.hex():
                raise StorageError(
                    f"{self._public_path}: key id {e.get('key_id')} is not its key's"
                )
            out[kid] = public
        return out

    def sign_manifest(self, manifest: bytes) -> tuple[bytes, LogPublicKey]:
        """Sign an evidence package's manifest bytes with the deployment key (the log signing
        key, in the manifest's own layout: :func:`homewarden.crypto.signing.sign_manifest`);
        returns the 64-byte signature and the public key. Call :meth:`ensure_key` first so a
        first-run key is accounted for.

        Raises:
            StorageError: the signing key cannot be loaded.
            InvalidSignatureError: ``manifest`` is not a JSON object's bytes.
        """
        key, _ = self._load_key()
        return sign_manifest(manifest, key), log_public_key(key)

    def rotate_key(self, actor: Actor, reason: str) -> tuple[bytes, bytes]:
        """Replace the log signing key; returns (old key id, new key id).

        In order: a tree head is signed with the old key (vouching for every entry so far);
        the new public key is listed (the old one stays, marked retired); the new secret key
        replaces the old file atomically; the rotation is appended (``system:key:rotate``) and
        a tree head signed with the new key.

        Raises:
            StorageError: the key files cannot be read or written.
            DatabaseError: the log cannot be written.
        """
        if not reason:
            raise InvalidRequestError("a key rotation needs a reason")
        old_key, _ = self._load_key()
        old_id = key_id(log_public_key(old_key))
        self.sign_tree_head()
        new_key = generate_log_key()
        new_id = key_id(log_public_key(new_key))
        with self._key_lock, keyfiles.locked(self._keys_dir):
            self._register_public_key(new_key, retire=old_id)
            keyfiles.replace_secret(self._key_path, log_key_seed(new_key))
        log.info("rotated the audit log signing key %s -> %s", old_id.hex()[:16], new_id.hex()[:16])
        self.append(AuditTag.SYSTEM_KEY_ROTATE, actor, reason, key=new_id.hex())
        self.sign_tree_head()
        return old_id, new_id

    # ---------------------------------------------------------------------------------------
    # signed tree heads

    def tree_heads(self) -> list[SignedTreeHead]:
        """Every stored signed tree head, by tree size."""
        return [_sth(r) for r in self._store.tree_heads()]

    def latest_tree_head(self) -> SignedTreeHead | None:
        """The stored head of the largest tree, or None."""
        row = self._store.latest_tree_head()
        return _sth(row) if row is not None else None

    def sign_tree_head(self) -> SignedTreeHead:
        """Sign and store a head for the log as it is now.

        The root is not taken on trust from the stored nodes: the previous largest signed head
        is checked (signature, and its root against the stored tree), then the entries after
        it are re-read and re-hashed on top of it - so a head never vouches for a tree whose
        stored hashes were altered.

        Raises:
            LogTamperedError: the stored tree disagrees with the previous head or the entries.
            InvalidSignatureError: the previous head's signature does not verify.
            StorageError: the signing key cannot be loaded.
        """
        key, _ = self._load_key()
        # The head first, then the size: another process (a job worker) may sign a head
        # between the two reads, and a head read first never covers more than the log holds
        # when its size is read after.
        previous = self.latest_tree_head()
        size = self._store.size()
        base = 0
        compact = merkle.CompactRange()
        if previous is not None and previous.tree_size > size:
            raise LogTamperedError(
                f"entry {size} is missing: the log holds {size} entries but a signed head "
                f"covers {previous.tree_size}",
                first_bad_index=size,
            )
        if previous is not None:
            verify_tree_head(previous, self.public_keys())
            base = previous.tree_size
            compact = self._load_compact(base, self._store.node_hashes)
            if compact.root() != previous.root_hash:
                raise LogTamperedError(
                    f"the stored tree of {base} entries no longer has the root signed at "
                    f"{previous.timestamp_ms} ms; run `homewarden audit verify`",
                    first_bad_index=None,
                    bad_range=(0, base),
                )
        expected = base
        for idx, leaf, stored_hash in self._store.iter_entries(base, size):
            if idx != expected:
                raise LogTamperedError(f"entry {expected} is missing", first_bad_index=expected)
            lh = merkle.leaf_hash(leaf)
            if lh != stored_hash:
                raise LogTamperedError(
                    f"entry {expected} does not match its stored leaf hash",
                    first_bad_index=expected,
                )
            if _stated_index(leaf) != expected:
                raise LogTamperedError(
                    f"entry {expected} is out of place", first_bad_index=expected
                )
            compact.push(lh)
            expected += 1
        if expected != size:
            raise LogTamperedError(f"entry {expected} is missing", first_bad_index=expected)
        head = TreeHead(size, compact.root(), epoch_ms(self._clock()), key_id(log_public_key(key)))
        sth = sign_tree_head(head, key)
        self._store.add_tree_head(
            sth.tree_size, sth.root_hash, sth.timestamp_ms, sth.key_id, sth.signature
        )
        return sth

    def sign_if_grown(self) -> SignedTreeHead | None:
        """Sign a head when the log grew since the largest signed head; else None."""
        latest = self._store.latest_tree_head()
        if latest is not None and latest.tree_size >= self._store.size():
            return None
        return self.sign_tree_head()

    # ---------------------------------------------------------------------------------------
    # verification

    def verify(self, from_sth: SignedTreeHead | None = None) -> VerifyReport:
        """Recompute the whole tree from the stored entries and check it against every stored
        signed tree head (and ``from_sth``, a head kept elsewhere).

        Steps, in order (each raises at its first failure):

        1. load the deployment's public keys (current and retired);
        2. check the signature of every stored head and of ``from_sth``;
        3. read every entry in index order: indexes without gaps, each leaf matching its
           stored leaf hash, each entry stating its own index; recompute the root at every
           head's size;
        4. the number of entries matches the size the writers recorded, and covers every head;
        5. every head's root equals the recomputed root of its size - on a mismatch the stored
           tree nodes, authenticated top-down from the signed root, lead to the first entry
           that differs;
        6. every stored tree node equals the one recomputed from the entries (proofs are built
           from them).

        Raises:
            InvalidSignatureError: a head's signature does not verify or its key is unknown.
            LogTamperedError: an entry was changed, deleted, inserted or moved (the message
                and ``first_bad_index`` name the first bad index), or a stored tree node is
                wrong.
            StorageError: the public keys cannot be read.
        """
        # (1) keys
        keys = self.public_keys()
        # (2) signatures
        heads = self.tree_heads()
        for sth in heads:
            verify_tree_head(sth, keys)
        if from_sth is not None:
            verify_tree_head(from_sth, keys)
        checks = sorted(
            [*heads, *([from_sth] if from_sth is not None else [])], key=lambda h: h.tree_size
        )
        sizes = {h.tree_size for h in checks}
        recorded = self._store.size()
        # (3) entries, in order; `levels[l]` collects the recomputed nodes of level l for the
        # entries before the first failure. Entries stored at another place than the one they
        # state are kept by stated index: a moved entry still vouches for its own place.
        roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
        levels: list[bytearray] = [bytearray()]
        moved: dict[int, list[bytes]] = {}
        compact = merkle.CompactRange()
        bad: tuple[int, str] | None = None
        pos = 0
        for idx, leaf, stored_hash in self._store.iter_entries():
            claimed = _stated_index(leaf)
            lh = merkle.leaf_hash(leaf)
            if claimed is not None and claimed != idx:
                moved.setdefault(claimed, []).append(lh)
            if bad is not None:
                continue  # only gathering moved entries now
            if idx != pos:
                bad = (pos, f"entry {pos} is missing (the next stored entry is {idx})")
                continue
            if lh != stored_hash:
                bad = (pos, f"entry {pos} does not match its stored leaf hash (changed)")
                continue
            if claimed != pos:
                said = "no index" if claimed is None else f"index {claimed}"
                bad = (pos, f"entry {pos} is out of place: it states {said}")
                continue
            levels[0] += lh
            for (level, _), h in compact.append(lh):
                if level == len(levels):
                    levels.append(bytearray())
                levels[level] += h
            pos += 1
            if pos in sizes:
                roots[pos] = compact.root()
        # (4) counts
        if bad is None and pos != recorded:
            if pos < recorded:
                bad = (pos, f"entry {pos} is missing: the log recorded {recorded} entries")
            else:
                bad = (recorded, f"entry {recorded} was inserted beyond the recorded size")
        if bad is None and checks and checks[-1].tree_size > pos:
            bad = (pos, f"entry {pos} is missing: a signed head covers {checks[-1].tree_size}")
        # (5) roots. Entries [0, known) passed step 3; a head can still place the first bad
        # index before a failure step 3 found later (an entry inserted with its own index).
        known = bad[0] if bad is not None else pos
        matched = 0
        for head in checks:
            where = f"signed head of size {head.tree_size} (signed at {head.timestamp_ms} ms)"
            if head.tree_size <= known and roots[head.tree_size] == head.root_hash:
                matched = head.tree_size
                continue
            first, span = self._locate(
                head.tree_size, head.root_hash, levels[0], known, matched, moved
            )
            if first is not None and first < known:
                raise LogTamperedError(
                    f"entry {first} was changed, inserted or moved: the entries do not match "
                    f"the {where}; the first bad index is {first}",
                    first_bad_index=first,
                )
            if head.tree_size > known:
                break  # step 3's failure stands; larger heads see the same prefix
            raise LogTamperedError(
                f"the entries do not match the {where}, and the stored tree hashes were "
                f"altered too: the first bad index is in {span[0]}..{span[1] - 1}",
                first_bad_index=None,
                bad_range=span,
            )
        if bad is not None:
            raise LogTamperedError(
                f"{bad[1]}; the first bad index is {bad[0]}", first_bad_index=bad[0]
            )
        # (6) stored nodes
        nodes = self._check_nodes(levels, pos)
        newest = max(heads, key=lambda s: (s.tree_size, s.timestamp_ms), default=None)
        return VerifyReport(
            size=pos,
            root_hash=compact.root(),
            tree_heads=len(heads),
            nodes=nodes,
            keys=len(keys),
            newest_head=newest,
            unsigned=pos - (newest.tree_size if newest else 0),
            from_sth=from_sth,
        )

    def _locate(
        self,
        size: int,
        trusted: bytes,
        leaves: bytearray,
        known: int,
        good_below: int,
        moved: dict[int, list[bytes]],
    ) -> tuple[int | None, tuple[int, int]]:
        """The first entry that differs from the tree signed with root ``trusted`` at
        ``size``, given the recomputed leaf hashes of entries ``[0, known)``.

        Descends from the root. At each node, the candidates for each child's original hash
        are the stored tree's, the one recomputed from the entries, and for a single entry the
        hash of any entry that states that index (an entry moved elsewhere still vouches for
        its place); the pair that hashes into the trusted parent is authentic (SHA-256 is
        collision resistant). It goes left when the authentic left child differs from the
        entries, else right. Returns ``(index, (index, index + 1))`` - ``index == known`` when
        everything before ``known`` is intact - or ``(None, span)``, the narrowest span holding
        the first bad index, when no pair authenticates (the stored hashes were altered too;
        entries below ``good_below`` matched a signed head, so the span starts there at the
        earliest).
        """

        @functools.cache
        def recomputed(lo: int, hi: int) -> bytes:
            return _mth(leaves, lo, hi)

        def candidates(lo: int, hi: int) -> list[bytes]:
            out: list[bytes] = []
            with contextlib.suppress(InvalidProofError):  # a stored node may be missing
                out.append(merkle.subtree_hashes([(lo, hi)], self._store.node_hashes)[0])
            if hi <= known:
                out.append(recomputed(lo, hi))
            if hi - lo == 1:
                out.extend(moved.get(lo, ()))
            return out

        a, b = 0, size
        while b - a > 1:
            mid = a + (1 << ((b - a - 1).bit_length() - 1))
            lefts, rights = candidates(a, mid), candidates(mid, b)
            pair = next(
                (
                    (left, right)
                    for left in lefts
                    for right in rights
                    if merkle.node_hash(left, right) == trusted
                ),
                None,
            )
            if pair is None:
                return None, (max(a, min(good_below, b - 1)), b)
            left, right = pair
            if mid > known or recomputed(a, mid) != left:
                b, trusted = mid, left
            else:
                a, trusted = mid, right
        if a >= known or bytes(leaves[32 * a : 32 * a + 32]) != trusted:
            return a, (a, a + 1)
        return None, (a, b)  # pragma: no cover - the root differed, so some leaf does

    def _check_nodes(self, levels: Sequence[bytearray], size: int) -> int:
        """Compare every stored interior node with the recomputed ``levels`` (level ``l``:
        the ``size >> l`` complete nodes, 32 bytes each); returns how many were checked.

        Stored nodes stream by level then index; each level is gathered and compared in one
        go, and searched node by node only when it differs.

        Raises:
            LogTamperedError: a stored node is missing, wrong, or has no place in the tree.
        """
        expected = {level: len(levels[level]) // 32 for level in range(1, len(levels))}

        def fail(level: int, idx: int, state: str) -> LogTamperedError:
            lo, hi = idx << level, (idx + 1) << level
            return LogTamperedError(
                f"stored tree node ({level}, {idx}) over entries {lo}..{hi - 1} is {state}; "
                "proofs built from it would fail",
                first_bad_index=None,
                bad_range=(min(lo, size), min(hi, size)),
            )

        def finish(level: int, got: bytearray, count: int) -> None:
            if count < expected[level]:
                raise fail(level, count, "missing")
            if got != levels[level]:
                j = next(
                    j
                    for j in range(count)
                    if got[32 * j : 32 * j + 32] != levels[level][32 * j : 32 * j + 32]
                )
                raise fail(level, j, "wrong")

        todo = sorted(expected)  # levels still to see, lowest first
        level, count, got = 0, 0, bytearray()
        for node_level, idx, h in self._store.iter_nodes():
            if node_level != level:
                if level:
                    finish(level, got, count)
                if todo and todo[0] < node_level:
                    raise fail(todo[0], 0, "missing")
                if not todo or todo[0] != node_level:
                    raise fail(node_level, idx, "not part of the tree")
                todo.pop(0)
                level, count, got = node_level, 0, bytearray()
            if idx != count:
                raise fail(level, count, "missing") if idx > count else fail(level, idx, "wrong")
            if count >= expected[level]:
                raise fail(level, idx, "not part of the tree")
            got += h
            count += 1
        if level:
            finish(level, got, count)
        if todo:
            raise fail(todo[0], 0, "missing")
        return sum(expected.values())


def _mth(leaves: bytearray, start: int, end: int) -> bytes:
    """MTH of the leaf hashes ``[start, end)`` held 32 bytes apiece in ``leaves``."""
    compact = merkle.CompactRange()
    for off in range(32 * start, 32 * end, 32):
        compact.push(bytes(leaves[off : off + 32]))
    return compact.root()


#: The top-level ``"index":N`` of a canonical entry. Inside a JSON string every quote is
#: escaped, and no nested object of an entry has an ``index`` key, so in a canonical leaf this
#: finds exactly its index, ~30x faster than parsing the JSON.
_INDEX_RE = re.compile(rb'"index":(0|[1-9][0-9]{0,18})[,}]')


def _stated_index(leaf: bytes) -> int | None:
    """The ``index`` a leaf states about itself, or None when it states none.

    Read without parsing (see :data:`_INDEX_RE`). It is evidence, not proof: a leaf that is
    not canonical is caught by its hash and the signed heads whatever it seems to state.
    """
    found = _INDEX_RE.search(leaf)
    return int(found.group(1)) if found else None
