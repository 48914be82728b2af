"""Household key tables (migration 0008) and the first-run placeholder key files.

Rows in, plain records out; what the bytes are (public keys, wraps, seals: the formats of
:mod:`homewarden.crypto.household_keys`) and every decision are
``homewarden.services.household_keys``'s. No private key is ever passed to this module in
the clear, except the first-run placeholder's (:func:`write_setup_key`), which goes to a 0600
file of the keys directory, never to the database. Shares the :class:`Index`'s engine. Times
are UTC epoch seconds; key ids are 16 bytes.

Deleting secrets. A destroyed wrap or seal must not linger in the database file: on SQLite
every transaction here that deletes rows first sets ``PRAGMA secure_delete = ON`` (SQLite
then overwrites deleted content with zeros, https://sqlite.org/pragma.html#pragma_secure_delete;
the pragma is per connection and stays on for that pooled connection, which only costs some
extra writes on later deletes). Old page images can still sit in the WAL file until the next
checkpoint, and PostgreSQL keeps dead tuples until ``VACUUM``: the service rotates the
household key whenever a destruction must also protect new footage, so that residue never
opens footage recorded afterwards.

Errors: :class:`~homewarden.errors.DatabaseError` when the database fails;
:class:`~homewarden.errors.InvalidRequestError` for a duplicate (two processes making the
same household key version at once: the loser re-reads); :class:`~homewarden.errors.
StorageError` for a key file that cannot be written, read or destroyed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from homewarden.errors import StorageError
from homewarden.store import keyfiles
from homewarden.store.index import Index, rowcount
from homewarden.store.models import (
    EscrowKeyRow,
    HouseholdEscrowRow,
    HouseholdKeyRow,
    HouseholdKeySealRow,
    KeyHolderRow,
)

#: Holder kinds (``key_holders.kind``).
PERSON = "person"
RECOVERY = "recovery"
SETUP = "setup"


@dataclass(frozen=True, slots=True)
class HouseholdKeyRecord:
    """One household key version as stored (public key and key id only)."""

    id: int
    household_id: str
    version: int
    key_id: bytes
    public_key: bytes
    created_at: float
    retired_at: float | None


@dataclass(frozen=True, slots=True)
class HolderRecord:
    """A holder as stored: ``kind`` (:data:`PERSON`, :data:`RECOVERY`, :data:`SETUP`), its
    household, user (persons only), key id, public key and wrapped private key (None for
    the setup placeholder)."""

    id: int
    kind: str
    household_id: str
    user_id: int | None
    key_id: bytes
    public_key: bytes
    wrap: bytes | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class SealRecord:
    """A household key version sealed to a holder or to the escrow key: the version's row id
    and key id, the holder's row id (or the escrow key's row id) and the sealed bytes."""

    id: int
    household_key_id: int
    key_id: bytes
    holder_id: int | None
    escrow_key_id: int | None
    sealed: bytes


@dataclass(frozen=True, slots=True)
class EscrowKeyRecord:
    """The deployment's escrow public key and how it was split."""

    id: int
    key_id: bytes
    public_key: bytes
    threshold: int
    shares: int
    created_at: float


@dataclass(frozen=True, slots=True)
class NewSeal:
    """A seal to store: the version's key id, and a holder row id or an escrow row id."""

    key_id: bytes
    sealed: bytes
    holder_id: int | None = None
    escrow_key_id: int | None = None


def _version(row: HouseholdKeyRow) -> HouseholdKeyRecord:
    return HouseholdKeyRecord(
        row.id,
        row.household_id,
        row.version,
        bytes(row.key_id),
        bytes(row.public_key),
        row.created_at,
        row.retired_at,
    )


def _holder(row: KeyHolderRow) -> HolderRecord:
    return HolderRecord(
        row.id,
        row.kind,
        row.household_id,
        row.user_id,
        bytes(row.key_id),
        bytes(row.public_key),
        None if row.wrap is None else bytes(row.wrap),
        row.created_at,
        row.updated_at,
    )


def _escrow(row: EscrowKeyRow) -> EscrowKeyRecord:
    return EscrowKeyRecord(
        row.id, bytes(row.key_id), bytes(row.public_key), row.threshold, row.shares, row.created_at
    )


def _scrub_deletes(s: Session) -> None:
    """Make SQLite overwrite what this transaction deletes (see the module docstring)."""
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text("PRAGMA secure_delete = ON"))


def _add_seals(s: Session, seals: Iterable[NewSeal], now: float) -> None:
    seals = list(seals)
    if not seals:
        return
    ids = {bytes(k.key_id) for k in seals}
    rows = s.scalars(select(HouseholdKeyRow).where(HouseholdKeyRow.key_id.in_(ids)))
    row_ids = {bytes(r.key_id): r.id for r in rows}
    for seal in seals:
        s.add(
            HouseholdKeySealRow(
                household_key_id=row_ids[bytes(seal.key_id)],
                holder_id=seal.holder_id,
                escrow_key_id=seal.escrow_key_id,
                sealed=seal.sealed,
                created_at=now,
            )
        )


class HouseholdKeyStore:
    """The household key tables of ``index``'s database (which must be migrated)."""

    def __init__(self, index: Index) -> None:
        self._index = index

    # household key versions

    def versions(self, household: str) -> list[HouseholdKeyRecord]:
        """Every key version of ``household``, oldest first."""
        with self._index.transaction(f"list keys of {household}") as s:
            q = (
                select(HouseholdKeyRow)
                .where(HouseholdKeyRow.household_id == household)
                .order_by(HouseholdKeyRow.version)
            )
            return [_version(r) for r in s.scalars(q)]

    def current(self, household: str) -> HouseholdKeyRecord | None:
        """The newest key version of ``household`` (what new footage is sealed to), or None."""
        with self._index.transaction(f"read current key of {household}") as s:
            q = (
                select(HouseholdKeyRow)
                .where(HouseholdKeyRow.household_id == household)
                .order_by(HouseholdKeyRow.version.desc())
                .limit(1)
            )
            row = s.scalars(q).first()
            return None if row is None else _version(row)

    def version_by_key_id(self, key_id: bytes) -> HouseholdKeyRecord | None:
        """The version with ``key_id``, or None."""
        with self._index.transaction("look up household key") as s:
            q = select(HouseholdKeyRow).where(HouseholdKeyRow.key_id == key_id)
            row = s.scalars(q).first()
            return None if row is None else _version(row)

    def add_version(
        self,
        household: str,
        version: int,
        key_id: bytes,
        public_key: bytes,
        seals: Sequence[NewSeal],
        now: float,
    ) -> HouseholdKeyRecord:
        """Store version ``version`` of ``household``'s key with its ``seals`` and retire the
        versions before it, in one transaction.

        Raises:
            InvalidRequestError: that version exists (another process made it first).
        """
        with self._index.transaction(f"add key version {version} of {household}") as s:
            s.execute(
                update(HouseholdKeyRow)
                .where(
                    HouseholdKeyRow.household_id == household,
                    HouseholdKeyRow.retired_at.is_(None),
                )
                .values(retired_at=now)
            )
            row = HouseholdKeyRow(
                household_id=household,
                version=version,
                key_id=key_id,
                public_key=public_key,
                created_at=now,
            )
            s.add(row)
            s.flush()
            _add_seals(s, seals, now)
            s.flush()
            return _version(row)

    # holders

    def holders(self, household: str, kind: str | None = None) -> list[HolderRecord]:
        """Holders of ``household`` (of one ``kind``), by id."""
        with self._index.transaction(f"list key holders of {household}") as s:
            q = select(KeyHolderRow).where(KeyHolderRow.household_id == household)
            if kind is not None:
                q = q.where(KeyHolderRow.kind == kind)
            return [_holder(r) for r in s.scalars(q.order_by(KeyHolderRow.id))]

    def person(self, user_id: int) -> HolderRecord | None:
        """The holder of user ``user_id``, or None (no key pair yet)."""
        with self._index.transaction(f"read key holder of user {user_id}") as s:
            q = select(KeyHolderRow).where(KeyHolderRow.user_id == user_id)
            row = s.scalars(q).first()
            return None if row is None else _holder(row)

    def add_holder(
        self,
        kind: str,
        household: str,
        key_id: bytes,
        public_key: bytes,
        wrap: bytes | None,
        now: float,
        *,
        user_id: int | None = None,
        seals: Sequence[NewSeal] = (),
        replaces: Sequence[int] = (),
    ) -> HolderRecord:
        """Store a holder and seals to it (their ``holder_id`` may be 0: it is filled in),
        deleting the holders ``replaces`` (and, by cascade, their seals) first, in one
        transaction."""
        with self._index.transaction(f"add {kind} key holder of {household}") as s:
            if replaces:
                _scrub_deletes(s)
                s.execute(
                    delete(HouseholdKeySealRow).where(HouseholdKeySealRow.holder_id.in_(replaces))
                )
                s.execute(delete(KeyHolderRow).where(KeyHolderRow.id.in_(replaces)))
            row = KeyHolderRow(
                kind=kind,
                household_id=household,
                user_id=user_id,
                key_id=key_id,
                public_key=public_key,
                wrap=wrap,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            _add_seals(
                s,
                (NewSeal(x.key_id, x.sealed, holder_id=row.id) for x in seals),
                now,
            )
            s.flush()
            return _holder(row)

    def set_wrap(self, holder_id: int, wrap: bytes, now: float) -> None:
        """Replace a holder's wrapped private key (a new password); the old wrap is
        overwritten on SQLite (secure delete)."""
        with self._index.transaction(f"re-wrap key holder {holder_id}") as s:
            _scrub_deletes(s)
            s.execute(
                update(KeyHolderRow)
                .where(KeyHolderRow.id == holder_id)
                .values(wrap=wrap, updated_at=now)
            )

    def delete_holder(self, holder_id: int) -> None:
        """Delete a holder and its seals."""
        with self._index.transaction(f"delete key holder {holder_id}") as s:
            _scrub_deletes(s)
            s.execute(delete(HouseholdKeySealRow).where(HouseholdKeySealRow.holder_id == holder_id))
            s.execute(delete(KeyHolderRow).where(KeyHolderRow.id == holder_id))

    # seals

    def _seals(self, action: str, *where: object) -> list[SealRecord]:
        q = (
            select(HouseholdKeySealRow, HouseholdKeyRow.key_id)
            .join(HouseholdKeyRow, HouseholdKeyRow.id == HouseholdKeySealRow.household_key_id)
            .where(*where)  # type: ignore[arg-type]
            .order_by(HouseholdKeyRow.version)
        )
        with self._index.transaction(action) as s:
            return [
                SealRecord(
                    r.id,
                    r.household_key_id,
                    bytes(kid),
                    r.holder_id,
                    r.escrow_key_id,
                    bytes(r.sealed),
                )
                for r, kid in s.execute(q).all()
            ]

    def holder_seals(self, holder_id: int) -> list[SealRecord]:
        """Every seal to holder ``holder_id``, oldest version first."""
        return self._seals(
            f"read seals of holder {holder_id}", HouseholdKeySealRow.holder_id == holder_id
        )

    def holder_seal(self, holder_id: int, key_id: bytes) -> SealRecord | None:
        """The seal of version ``key_id`` to holder ``holder_id``, or None."""
        found = self._seals(
            "read a seal",
            HouseholdKeySealRow.holder_id == holder_id,
            HouseholdKeyRow.key_id == key_id,
        )
        return found[0] if found else None

    def household_seals(self, household: str) -> list[SealRecord]:
        """Every seal of every version of ``household``'s key (holders' and escrow's)."""
        return self._seals(f"read seals of {household}", HouseholdKeyRow.household_id == household)

    def add_seals(self, seals: Sequence[NewSeal], now: float) -> None:
        """Store seals (a grant).

        Raises:
            InvalidRequestError: one of them exists already (a concurrent grant).
        """
        with self._index.transaction("add household key seals") as s:
            _add_seals(s, seals, now)

    def delete_seals_of(self, holder_id: int) -> int:
        """Delete every seal to holder ``holder_id`` (a revocation); returns how many."""
        with self._index.transaction(f"revoke seals of holder {holder_id}") as s:
            _scrub_deletes(s)
            q = delete(HouseholdKeySealRow).where(HouseholdKeySealRow.holder_id == holder_id)
            return rowcount(s.execute(q))

    # escrow

    def escrow_key(self) -> EscrowKeyRecord | None:
        """The deployment's escrow key, or None (``homewarden escrow init`` not run)."""
        with self._index.transaction("read escrow key") as s:
            row = s.scalars(select(EscrowKeyRow).order_by(EscrowKeyRow.id.desc())).first()
            return None if row is None else _escrow(row)

    def add_escrow_key(
        self, key_id: bytes, public_key: bytes, threshold: int, shares: int, now: float
    ) -> EscrowKeyRecord:
        """Store the escrow public key."""
        with self._index.transaction("add escrow key") as s:
            row = EscrowKeyRow(
                key_id=key_id,
                public_key=public_key,
                threshold=threshold,
                shares=shares,
                created_at=now,
            )
            s.add(row)
            s.flush()
            return _escrow(row)

    def escrow_enabled(self, household: str) -> bool:
        """Whether the owner turned emergency access on (default off)."""
        with self._index.transaction(f"read escrow switch of {household}") as s:
            row = s.get(HouseholdEscrowRow, household)
            return bool(row is not None and row.enabled)

    def set_escrow(
        self,
        household: str,
        enabled: bool,
        now: float,
        by: int | None,
        seals: Sequence[NewSeal] = (),
    ) -> int:
        """Turn the switch on (storing ``seals`` to the escrow key) or off (deleting every
        escrow seal of the household) in one transaction; returns the seals deleted."""
        with self._index.transaction(f"set escrow switch of {household}") as s:
            row = s.get(HouseholdEscrowRow, household)
            if row is None:
                row = HouseholdEscrowRow(household_id=household)
                s.add(row)
            row.enabled, row.updated_at, row.updated_by = enabled, now, by
            deleted = 0
            if enabled:
                _add_seals(s, seals, now)
            else:
                _scrub_deletes(s)
                versions = select(HouseholdKeyRow.id).where(
                    HouseholdKeyRow.household_id == household
                )
                q = delete(HouseholdKeySealRow).where(
                    HouseholdKeySealRow.escrow_key_id.is_not(None),
                    HouseholdKeySealRow.household_key_id.in_(versions),
                )
                deleted = rowcount(s.execute(q))
            return deleted


# first-run placeholder key files


def setup_key_path(keys_dir: Path, key_id: bytes) -> Path:
    """Where the first-run placeholder holder key ``key_id`` is kept."""
    return keys_dir / f"household_setup_{key_id.hex()}.key"


def write_setup_key(path: Path, private_key: bytes) -> None:
    """Create the placeholder's key file (mode 0600, atomic, never over an existing one).

    Raises:
        StorageError: it cannot be written, or it exists already.
    """
    if not keyfiles.create_secret(path, private_key):
        raise StorageError(f"{path} exists already")


def read_setup_key(path: Path) -> bytes | None:
    """The placeholder's private key, or None when its file is gone.

    Raises:
        StorageError: unreadable, or readable by others (see ``keyfiles.read_secret``).
    """
    return keyfiles.read_secret(path)


def destroy_setup_key(path: Path) -> None:
    """Overwrite the placeholder's key file with zeros, fsync, then unlink it (no error when
    it is gone). The overwrite is best effort: a copy-on-write or journalling file system, or
    an SSD's wear levelling, may keep the old blocks.

    Raises:
        StorageError: it cannot be overwritten or removed.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        size = os.fstat(fd).st_size
        os.pwrite(fd, b"\0" * size, 0)
        os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"cannot overwrite {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    try:
        path.unlink(missing_ok=True)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise StorageError(f"cannot remove {path}: {exc.strerror or exc}") from exc
