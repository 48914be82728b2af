"""Household key management (DESIGN.md flow 8; issue 6): who can open a household's footage
keys, unlocking them at login into the session's server memory, and the recovery code and
escrow around them.

Model
-----
A household has key *versions* (X25519, :mod:`homewarden.crypto.household_keys`): the newest
one's public key is stored in the clear and is what the recorder seals new footage to
(:meth:`KeyRing.recording_key`, no secret needed); older versions still open the footage
sealed to them. No private household key is ever stored, in the database or on disk: each
version is sealed (``crypto_box_seal``) to each *holder*'s public key:

- each person allowed to view (the owner, and a member while they hold at least one camera
  grant and their account is enabled) has their own key pair, whose private key is wrapped
  under their login password (Argon2id, ``WRAP_ARGON2ID``);
- the household's recovery key pair, whose private key is wrapped under the recovery code
  shown once to the owner;
- the deployment's escrow key, only while the owner has emergency access on;
- before the household's first owner has a password (first run: the recorder needs a public
  key before anyone has logged in), a placeholder key pair whose private key is a 0600 file
  in the keys directory; the first owner's setup (or first login) seals every version to the
  owner and a new recovery key, destroys the placeholder and its file, and rotates, so no key
  that was ever on disk in the clear is used for footage recorded after setup.

Why a recovery *key pair* rather than the household key wrapped under the recovery code
directly (a deviation from the issue's wording): a rotation (a member revoked, emergency
access turned off) must give the new version to the recovery code too, and the code is
shown once and never kept; sealing to the recovery key's public key needs no secret. The
same holds for people: a rotation reaches every remaining holder from public keys alone, and
granting a member needs the granter's unlocked household keys, never the member's password.

Sessions
--------
A password login (:meth:`KeyRing.password_verified`, called by
:meth:`~homewarden.services.accounts.AccountService.login`) opens the person's key with the
password and their seals with it, and keeps both in an in-memory map keyed by the session's
id (never written to disk or the database). A session waiting for its TOTP code keeps them
aside until the code is right (:meth:`KeyRing.session_promoted`), at most
``domain.accounts.MFA_PENDING`` seconds. Logout, a password change, a disabled account and
session expiry drop them (:meth:`KeyRing.sessions_ended`; :meth:`KeyRing.private_key` also
checks the session's row on each use and drops an ended one; :meth:`KeyRing.sweep` clears
every ended one). Keys live in the memory of the server process that unlocked them: after a
restart, or on another web server of a many-box deployment, the person signs in again
(:class:`~homewarden.errors.KeysLockedError`). A person who has no key pair yet (created
before this feature, or by the CLI with a password) gets one at their next login or setup,
when the password is known.

At the machine's shell there is no session: ``homewarden clip``/``export --user NAME`` opens
that person's key with their password (:meth:`KeyRing.unlock_with_password`) and gets the
versions they hold for that one command, in its memory only (never through the job queue).

Grants and revocations follow the camera grants of :class:`AccountService`
(:meth:`KeyRing.access_changed`): granting a member a first camera seals the household keys to
the member when the granting owner's session is unlocked here (otherwise the grant is
*pending* and completed at the next unlock of an owner of the household, including when the
member logs in while an owner is unlocked); withdrawing their last camera (or disabling the
account) deletes every seal to them and rotates the household key, so the member holds no
seal of the new version while the remaining holders get it. Old versions stay readable by the
remaining holders.

Audit (only services write entries; tags ``key:*`` of :class:`~homewarden.domain.audit.
AuditTag`, shown in the owner's access log): every unlock, grant, revocation, rotation,
personal key made or re-wrapped, recovery code made, rotated, used or refused, escrow key
made, escrow switched on or off, escrow shares combined or refused. Each use of an unlocked
key for footage is already an audit entry of its own (``footage:*``), so
:meth:`KeyRing.private_key` writes none.

Python cannot wipe memory: dropping a session's keys drops the references only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from homewarden.crypto.household_keys import (
    WRAP_ARGON2ID,
    Argon2idParams,
    HolderKeyPair,
    HouseholdKeyPair,
    HouseholdPublicKey,
    KeyId,
    combine_escrow_shares,
    escrow_public_key_from_bytes,
    generate_escrow_key,
    generate_holder_key,
    generate_household_key,
    holder_key_from_private_bytes,
    holder_public_key_from_bytes,
    household_public_key_from_bytes,
    new_recovery_code,
    open_escrow,
    open_holder_seal,
    seal_for_escrow,
    seal_to_holder,
    split_escrow_key,
    unwrap_holder_with_passphrase,
    unwrap_holder_with_recovery_code,
    wrap_holder_with_passphrase,
    wrap_holder_with_recovery_code,
)
from homewarden.domain import accounts as rules
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.disclosure import Policy
from homewarden.domain.permissions import Principal, Role
from homewarden.errors import (
    AuthenticationError,
    HomeWardenError,
    InvalidRequestError,
    KeyShareError,
    KeysLockedError,
    KeyUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    SealedDataError,
    WrongKeyError,
)
from homewarden.services.accounts import (
    DEPLOYMENT_HOUSEHOLD,
    STAGE_FULL,
    AccountService,
    user_actor,
)
from homewarden.services.audit import AuditLog
from homewarden.services.disclosure import policy_from_json
from homewarden.services.sealed_footage import KeySource
from homewarden.store import household_key_store as hks
from homewarden.store.accounts_store import SessionRecord, UserRecord
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.store.household_key_store import (
    HolderRecord,
    HouseholdKeyRecord,
    HouseholdKeyStore,
    NewSeal,
)
from homewarden.store.index import Index

log = logging.getLogger(__name__)

#: The actor of key changes the system makes by itself (first keys, placeholders).
KEYS_ACTOR = Actor(ActorKind.SYSTEM, "household-keys")
#: A session's key: its stored id (the SHA-256 hex of the cookie secret), or its record.
SessionRef = SessionRecord | str


@dataclass(slots=True)
class _Unlocked:
    """One session's unlocked keys: the person's key pair and household key versions by key
    id. ``pending_until`` (UTC epoch s) is set while the session waits for its TOTP code."""

    user_id: int
    household: str
    holder_id: int
    holder: HolderKeyPair
    keys: dict[bytes, HouseholdKeyPair] = field(default_factory=dict)
    pending_until: float | None = None


@dataclass(frozen=True, slots=True)
class KeyVersionView:
    """One household key version: ``version`` (1, 2, ...), ``key_id`` (hex), when it was made
    and retired (UTC epoch s; None while current), and who holds a seal of it
    (``person:<username>``, ``recovery``, ``escrow``, ``setup``)."""

    version: int
    key_id: str
    created_at: float
    retired_at: float | None
    holders: list[str]


@dataclass(frozen=True, slots=True)
class PersonKeyView:
    """A person of the household and the keys: whether they have a key pair yet, whether
    they should hold the household keys (``entitled``: owners; members with a camera grant
    and an enabled account), the versions they hold, and ``pending`` (entitled but missing a
    version: completed at the next unlock of an owner)."""

    user_id: int
    username: str
    role: str
    has_key_pair: bool
    entitled: bool
    versions: list[int]
    pending: bool


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A household's keys as its owner sees them (no secret): versions newest last, the
    current key id (hex), people, whether a recovery code exists (and since when), whether
    the first-run placeholder still holds keys, the deployment's escrow key id (hex; None
    until ``homewarden escrow init``) and the owner's emergency-access switch."""

    household: str
    current_key_id: str | None
    versions: list[KeyVersionView]
    people: list[PersonKeyView]
    recovery_code: bool
    recovery_created_at: float | None
    setup_pending: bool
    escrow_key_id: str | None
    escrow_enabled: bool


class KeyRing:
    """Household key management over the index's database (see the module docstring).

    Args:
        index: a migrated index (its engine is shared).
        audit: where every key use is written.
        accounts: the account service; the ring reads users, sessions and camera grants
            through it and resets a password after a recovery. Set ``accounts.keys`` to this
            ring so logins unlock keys (:func:`attach` does both).
        keys_dir: the deployment's keys directory (first-run placeholder key files).
        clock: now as UTC epoch seconds.
        params: Argon2id cost of new password wraps; the production default
            :data:`~homewarden.crypto.household_keys.WRAP_ARGON2ID` (RFC 9106's second
            recommendation) must not be lowered outside tests.
        emergency_allowed: whether a household's disclosure policy allows emergency
            disclosure (default: its stored policy, ``homewarden.services.disclosure``).

    Thread-safe within a process; several processes may share the database (a version made
    twice at once fails for one of them, which re-reads).
    """

    def __init__(
        self,
        index: Index,
        audit: AuditLog,
        accounts: AccountService,
        keys_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        params: Argon2idParams = WRAP_ARGON2ID,
        emergency_allowed: Callable[[str], bool] | None = None,
    ) -> None:
        self._store = HouseholdKeyStore(index)
        self._audit = audit
        self._accounts = accounts
        self._keys_dir = keys_dir
        self._clock = clock
        self._params = params
        self._disclosure = DisclosureStore(index)
        self._emergency_allowed = emergency_allowed or self._policy_allows_emergency
        self._lock = threading.RLock()  # the session maps
        self._change = threading.RLock()  # versions, holders, seals: one change at a time
        self._sessions: dict[str, _Unlocked] = {}
        self._pending: dict[str, _Unlocked] = {}
        self._setup_codes: dict[int, str] = {}

    @property
    def store(self) -> HouseholdKeyStore:
        """The household key tables."""
        return self._store

    # ---------------------------------------------------------------------------------------
    # for the recorder: the public key, no secret

    def recording_key(self, household: str) -> tuple[KeyId, HouseholdPublicKey]:
        """The household's current key id (16 bytes) and public key, which new footage is
        sealed to. Needs no secret; read it per segment, as a rotation changes it.

        Raises:
            NotFoundError: the household has no key (the runtime makes one at start).
        """
        cur = self._store.current(household)
        if cur is None:
            raise NotFoundError(f"household {household!r} has no key yet")
        return KeyId(cur.key_id), household_public_key_from_bytes(cur.public_key)

    def ensure_household_key(self, household: str) -> HouseholdKeyRecord:
        """The household's current key version, making version 1 (held by the first-run
        placeholder) when it has none.

        Raises:
            StorageError: the placeholder's key file cannot be written.
        """
        with self._change:
            cur = self._store.current(household)
            if cur is not None:
                return cur
            holder, hpair = self._setup_holder(household)
            pair = generate_household_key()
            seal = NewSeal(pair.key_id, seal_to_holder(pair, hpair.public), holder_id=holder.id)
            try:
                rec = self._store.add_version(
                    household, 1, pair.key_id, bytes(pair.public), [seal], self._clock()
                )
            except InvalidRequestError:  # another process made it first
                found = self._store.current(household)
                if found is None:
                    raise
                return found
            self._audit.append(
                AuditTag.KEY_HOUSEHOLD_CREATE,
                KEYS_ACTOR,
                "version 1, held for the household's first owner until they set a password",
                key=pair.key_id.hex(),
                household=household,
            )
            return rec

    # ---------------------------------------------------------------------------------------
    # hooks called by AccountService (homewarden.services.accounts.KeyHooks)

    def households_ensured(self, households: Sequence[str]) -> None:
        """Give each household without a key its first key (see
        :meth:`ensure_household_key`)."""
        for household in households:
            self.ensure_household_key(household)

    def password_verified(self, user: UserRecord, password: str, session: SessionRecord) -> None:
        """Unlock ``user``'s keys into ``session``'s memory (making their key pair first if
        they have none). Never raises: a key problem is logged and leaves the keys locked."""
        try:
            self._unlock(user, password, session)
        except HomeWardenError as exc:
            log.warning("keys of %s not unlocked at login: %s", user.username, exc)

    def session_promoted(self, pending: SessionRecord, session: SessionRecord) -> None:
        """Move the keys unlocked at the password step to the full session made by the TOTP
        step (nothing when they were not unlocked or waited too long). Never raises."""
        now = self._clock()
        with self._lock:
            entry = self._pending.pop(pending.id, None)
            if entry is None or entry.pending_until is None or entry.pending_until <= now:
                return
            entry.pending_until = None
            self._sessions[session.id] = entry
        try:
            self._after_full_unlock(entry)
        except HomeWardenError as exc:
            log.warning("pending key grants not completed at login: %s", exc)

    def sessions_ended(self, *, session_id: str | None = None, user_id: int | None = None) -> None:
        """Drop the keys of one session, or of every session of one user."""
        with self._lock:
            for table in (self._sessions, self._pending):
                for sid in [
                    sid
                    for sid, e in table.items()
                    if sid == session_id or (user_id is not None and e.user_id == user_id)
                ]:
                    del table[sid]

    def password_set(self, user: UserRecord, password: str, old: str | None) -> None:
        """Re-wrap ``user``'s key under ``password`` (with the ``old`` one known), or give them
        a new key pair (first password; or a reset through a setup link, where the old key
        and its seals are dropped: the person is granted again by an owner, an owner through
        the recovery code). A household's first owner completes its setup here.

        Raises:
            StorageError, DatabaseError: the wrap cannot be stored (the password is not
                changed then).
        """
        household = self._household_person(user)
        if household is None:
            return
        rec = self._store.person(user.id)
        actor = user_actor(user)
        if rec is not None and old is not None and rec.wrap is not None:
            try:
                pair = unwrap_holder_with_passphrase(
                    rec.wrap, old, expected_key_id=KeyId(rec.key_id)
                )
            except WrongKeyError:
                log.warning("the key of %s did not open with the old password", user.username)
            else:
                wrap = wrap_holder_with_passphrase(pair, password, self._params)
                self._store.set_wrap(rec.id, wrap, self._clock())
                self._audit.append(
                    AuditTag.KEY_PERSONAL_REWRAP,
                    actor,
                    f"{user.username}'s key re-wrapped under the new password",
                    key=rec.key_id.hex(),
                    household=household,
                )
                return
        holder, _pair = self._new_person(user, household, password, rec)
        if user.role == Role.OWNER:
            self._finalise_setup(household, holder, actor, user.id)

    def access_changed(self, member: UserRecord, actor: Actor, granter: Principal | None) -> None:
        """Bring a member's seals in line with their access: seal the household keys to them
        when they are entitled and ``granter`` (an owner) is unlocked in this process (else
        the grant waits for an owner's next unlock); revoke and rotate when they are not.

        Raises:
            DatabaseError: the change cannot be stored.
        """
        household = self._household_person(member)
        if household is None or member.role != Role.MEMBER:
            return
        rec = self._store.person(member.id)
        if rec is None:
            return  # no key pair until their first login: nothing to seal to or revoke
        if not self._entitled(self._accounts.store.user(member.id)):
            if self._store.holder_seals(rec.id):
                self._revoke(household, member, rec, actor)
            return
        entry = None
        if granter is not None and granter.role is Role.OWNER and granter.user_id is not None:
            entry = self._unlocked_of(granter.user_id, household)
        if entry is None:
            log.info("key grant to %s pending until an owner unlocks", member.username)
            return
        self._grant(household, member, rec, entry, actor)

    # ---------------------------------------------------------------------------------------
    # for playback: the session's unlocked keys

    def private_key(
        self, session: SessionRef, household: str, key_id: bytes | str
    ) -> HouseholdKeyPair:
        """The household key version ``key_id`` (16 bytes, or hex) of ``household``, as
        unlocked for ``session``. The session must be live and full, its person must still
        hold a seal of that version (a revocation takes effect at once), and the keys must
        have been unlocked in this process.

        Raises:
            KeysLockedError: the session holds no unlocked keys here (never unlocked, ended,
                expired, an API token, a restart since the login).
            KeyUnavailableError: the person holds no such key of ``household``: another
                household's, revoked, rotated in before they were granted, unknown.
        """
        entry = self._live_entry(session)
        kid = bytes.fromhex(key_id) if isinstance(key_id, str) else bytes(key_id)
        return _held_key(self._store, entry, self._lock, household, kid)

    def is_unlocked(self, session: SessionRef) -> bool:
        """Whether ``session`` holds unlocked keys in this process (live, full)."""
        try:
            self._live_entry(session)
        except KeysLockedError:
            return False
        return True

    def sweep(self) -> int:
        """Drop the keys of every ended, expired or timed-out session; returns how many."""
        now = self._clock()
        with self._lock:
            dead = [sid for sid, e in self._pending.items() if (e.pending_until or 0) <= now]
            for sid in dead:
                del self._pending[sid]
            full = list(self._sessions)
        ended = [sid for sid in full if not self._session_live(sid)]
        with self._lock:
            for sid in ended:
                self._sessions.pop(sid, None)
        return len(dead) + len(ended)

    # ---------------------------------------------------------------------------------------
    # at the machine's shell: a person's password, no session

    def unlock_with_password(
        self,
        username: str,
        password: str,
        actor: Actor,
        *,
        cameras: Collection[str] = (),
        purpose: str = "a shell command",
    ) -> KeySource:
        """Open, with ``username``'s login password, the household key versions that person
        holds, for one command at the machine's shell (``homewarden clip``/``export
        --user``), which has no signed-in session; returns a
        :data:`~homewarden.services.sealed_footage.KeySource` over them, held in this
        process's memory only (never written to the database, the disk or a queue; dropped
        with the returned object).

        The password is checked by opening the person's key wrap (Argon2id), not the login
        hash: what it unlocks is exactly what a login would unlock. Only the versions sealed
        to that person open: an owner's, or a member's while granted (a member revoked holds
        no seal of the version made at the revocation, nor of any older one). Each use
        checks again that the seal still exists, so a revocation during the command takes
        effect at once. ``cameras``: what the command reads; a member must be granted each
        of them (as in the web app). Audited as ``key:shell:unlock`` naming ``actor`` (the
        local operator), the person and ``purpose``, and so is a refusal.

        No TOTP and no rate limiting, unlike :meth:`AccountService.login
        <homewarden.services.accounts.AccountService.login>`: whoever runs this already holds
        the server (its data dir, database and config), so neither would protect anything a
        throttle could; each wrong guess still costs one Argon2id derivation (~80 ms at
        ``WRAP_ARGON2ID``) and an audit entry.

        Raises:
            AuthenticationError: no such user, or the password does not open their key
                wrap ("wrong username or password", as at login); a disabled account; a
                person of no household; one with no key pair yet (made at their next login in
                the web app). Audited as a refused ``key:shell:unlock``.
            PermissionDeniedError: a member not granted one of ``cameras`` (audited).
        """
        try:
            user: UserRecord | None = self._accounts.user_by_name(username)
        except (NotFoundError, InvalidRequestError):
            user = None
        household = None if user is None else self._household_person(user)
        rec = None if user is None else self._store.person(user.id)
        pair: HolderKeyPair | None = None
        if rec is not None and rec.wrap is not None:
            try:
                pair = unwrap_holder_with_passphrase(
                    rec.wrap, password[: rules.PASSWORD_MAX], expected_key_id=KeyId(rec.key_id)
                )
            except (WrongKeyError, InvalidRequestError):  # wrong, or empty
                pair = None
        refusal: HomeWardenError | None = None
        if user is None or (rec is not None and rec.wrap is not None and pair is None):
            refusal = AuthenticationError("wrong username or password")
        elif user.disabled:
            refusal = AuthenticationError(f"the account {user.username!r} is disabled")
        elif household is None:
            refusal = AuthenticationError(
                f"{user.username!r} belongs to no household and holds no household keys"
            )
        elif rec is None or pair is None:
            refusal = AuthenticationError(
                f"{user.username!r} has no key pair yet: it is made at their next login in "
                "the web app"
            )
        elif user.role == Role.MEMBER:
            missing = sorted(set(cameras) - self._accounts.camera_grants(user.id))
            if missing:
                refusal = PermissionDeniedError(
                    f"{user.username!r} is not granted camera(s) {', '.join(missing)}"
                )
        who = username if user is None else user.username
        if refusal is not None:
            self._audit.append(
                AuditTag.KEY_SHELL_UNLOCK,
                actor,
                f"refused for {who} ({purpose}): {refusal}"[:500],
                household=household,
            )
            raise refusal
        assert user is not None
        assert household is not None
        assert rec is not None
        assert pair is not None
        opened = self._open_seals(rec.id, pair)
        current = self._store.current(household)
        self._audit.append(
            AuditTag.KEY_SHELL_UNLOCK,
            actor,
            f"{who}'s password opened {len(opened)} key versions at the shell ({purpose})"[:500],
            key=None if current is None else current.key_id.hex(),
            household=household,
        )
        return _ShellKeys(self._store, _Unlocked(user.id, household, rec.id, pair, opened))

    # ---------------------------------------------------------------------------------------
    # owner actions

    def status(self, household: str) -> KeyStatus:
        """The household's keys, holders, recovery and escrow state (no secret)."""
        versions = self._store.versions(household)
        holders = {h.id: h for h in self._store.holders(household)}
        seals = self._store.household_seals(household)
        users = {u.id: u for u in self._accounts.users(household)}
        by_version: dict[int, list[str]] = {v.id: [] for v in versions}
        held: dict[int, list[int]] = {}
        number = {v.id: v.version for v in versions}
        for seal in seals:
            if seal.escrow_key_id is not None:
                by_version[seal.household_key_id].append("escrow")
                continue
            holder = holders.get(seal.holder_id or -1)
            if holder is None:
                continue
            if holder.kind == hks.PERSON and holder.user_id in users:
                name = f"person:{users[holder.user_id].username}"
                held.setdefault(holder.user_id, []).append(number[seal.household_key_id])
            else:
                name = holder.kind
            by_version[seal.household_key_id].append(name)
        people = []
        for user in users.values():
            if not Role(user.role).in_household:
                continue
            person = next((h for h in holders.values() if h.user_id == user.id), None)
            have = sorted(held.get(user.id, []))
            entitled = self._entitled(user)
            people.append(
                PersonKeyView(
                    user.id,
                    user.username,
                    user.role,
                    person is not None,
                    entitled,
                    have,
                    entitled and len(have) < len(versions),
                )
            )
        recovery = [h for h in holders.values() if h.kind == hks.RECOVERY]
        escrow = self._store.escrow_key()
        return KeyStatus(
            household=household,
            current_key_id=versions[-1].key_id.hex() if versions else None,
            versions=[
                KeyVersionView(
                    v.version, v.key_id.hex(), v.created_at, v.retired_at, by_version[v.id]
                )
                for v in versions
            ],
            people=people,
            recovery_code=bool(recovery),
            recovery_created_at=recovery[0].created_at if recovery else None,
            setup_pending=any(h.kind == hks.SETUP for h in holders.values()),
            escrow_key_id=None if escrow is None else escrow.key_id.hex(),
            escrow_enabled=self._store.escrow_enabled(household),
        )

    def grant(self, session: SessionRef, member_id: int, actor: Actor) -> int:
        """Seal every household key version the owner's ``session`` holds to member
        ``member_id`` now (completing a pending grant); returns the seals added.

        Raises:
            KeysLockedError: the session is not unlocked.
            PermissionDeniedError: the session is not an owner's.
            NotFoundError: no such member of the owner's household.
            InvalidRequestError: the member has no camera grant (grant a camera first), or
                no key pair yet (they have not logged in since it was created).
        """
        entry = self._owner_entry(session)
        member = self._accounts.user(member_id)
        if member.household_id != entry.household or member.role != Role.MEMBER:
            raise NotFoundError(f"no member {member_id}")
        if not self._entitled(member):
            raise InvalidRequestError(
                f"{member.username} has no camera grant (or is disabled): grant a camera first"
            )
        rec = self._store.person(member.id)
        if rec is None:
            raise InvalidRequestError(
                f"{member.username} has no key pair yet: it is made at their next login"
            )
        return self._grant(entry.household, member, rec, entry, actor)

    def revoke(self, owner: Principal, member_id: int, actor: Actor) -> None:
        """Withdraw every camera grant of member ``member_id`` (through the account service,
        so the grants and the keys agree); their seals are deleted and the household key
        rotated. Needs no unlocked session: revoking uses no secret.

        Raises:
            NotFoundError: no such member of the owner's household.
        """
        member = self._accounts.user(member_id)
        if owner.household is None or member.household_id != owner.household:
            raise NotFoundError(f"no member {member_id}")
        if member.role != Role.MEMBER:
            raise InvalidRequestError(f"{member.username} is not a member")
        cameras = sorted(self._accounts.camera_grants(member.id))
        for camera in cameras:
            self._accounts.revoke_camera(owner, member.id, camera, actor)
        rec = self._store.person(member.id)
        if rec is not None and self._store.holder_seals(rec.id):
            self._revoke(owner.household, member, rec, actor)  # seals without camera grants

    def take_setup_recovery_code(self, user_id: int) -> str | None:
        """The recovery code made when owner ``user_id``'s setup completed the household's
        keys, once (then None). Kept in memory only: after a restart, rotate it instead."""
        with self._lock:
            return self._setup_codes.pop(user_id, None)

    def rotate_recovery(self, session: SessionRef, actor: Actor) -> str:
        """A new recovery code for the owner's household (returned once, to be shown); the
        old recovery key, its wrap and seals are destroyed.

        Raises:
            KeysLockedError: the session is not unlocked.
            PermissionDeniedError: not an owner's session.
            KeyUnavailableError: the session lacks a key version, which the new code could
                then not open (the old code is kept).
        """
        entry = self._owner_entry(session)
        household = entry.household
        with self._change:
            keys = self._all_versions(entry)
            code = self._new_recovery(household, keys)
        self._audit.append(
            AuditTag.KEY_RECOVERY_ROTATE,
            actor,
            f"new recovery code for {len(keys)} key versions; the old one destroyed",
            household=household,
        )
        return code

    def recover(self, username: str, code: str, new_password: str, client_host: str) -> str:
        """A forgotten owner password: with the household's recovery code, set
        ``new_password``, give the owner a new key pair holding every key version, and replace
        the recovery code (it was typed somewhere); returns the new code, to be shown once.
        Every session of the owner ends and every API token of theirs is revoked, each
        audited (:meth:`AccountService.reset_password`): whoever held the account may have
        made one.

        Raises:
            AuthenticationError: not an owner, no recovery code, or a wrong or mistyped code
                (the message says which of the last two).
            InvalidRequestError: a weak new password.
        """
        try:
            user = self._accounts.user_by_name(username)
        except (NotFoundError, InvalidRequestError):
            raise AuthenticationError("wrong username or recovery code") from None
        household = self._household_person(user)
        recovery = self._store.holders(household, hks.RECOVERY) if household is not None else []
        if household is None or user.role != Role.OWNER or not recovery:
            raise AuthenticationError("wrong username or recovery code")
        rec = recovery[0]
        assert rec.wrap is not None
        try:
            rpair = unwrap_holder_with_recovery_code(
                rec.wrap, code, expected_key_id=KeyId(rec.key_id)
            )
        except WrongKeyError as exc:
            self._audit.append(
                AuditTag.KEY_RECOVERY_USE,
                user_actor(user),
                f"refused from {client_host}: {exc.reason}",
                household=household,
            )
            mistyped = exc.reason in ("mistyped recovery code", "malformed recovery code")
            raise AuthenticationError(
                str(exc) if mistyped else "wrong username or recovery code"
            ) from exc
        rules.check_new_password(new_password, user.username)
        keys = self._open_seals(rec.id, rpair)
        self._audit.append(
            AuditTag.KEY_RECOVERY_USE,
            user_actor(user),
            f"used by {user.username} from {client_host}: {len(keys)} key versions opened",
            household=household,
        )
        with self._change:
            old = self._store.person(user.id)
            self._new_person(user, household, new_password, old, keys=keys)
            self._accounts.reset_password(
                user.id, new_password, actor=user_actor(user), why="recovery code"
            )
            new_code = self._new_recovery(household, keys)
        self._audit.append(
            AuditTag.KEY_RECOVERY_ROTATE,
            user_actor(user),
            "recovery code replaced after use; the used one destroyed",
            household=household,
        )
        return new_code

    # ---------------------------------------------------------------------------------------
    # escrow

    def init_escrow(self, actor: Actor, threshold: int = 2, count: int = 3) -> list[str]:
        """Make the deployment's escrow key, keep only its public key, and return the
        ``count`` custodian shares (``threshold`` of them rebuild it) as text, to be handed
        out once and never stored.

        Raises:
            InvalidRequestError: the deployment has an escrow key already, or a bad split.
        """
        if self._store.escrow_key() is not None:
            raise InvalidRequestError(
                "this deployment has an escrow key already; its shares were shown when it was made"
            )
        escrow = generate_escrow_key()
        shares = split_escrow_key(escrow, threshold, count)
        self._store.add_escrow_key(
            escrow.key_id, bytes(escrow.public), threshold, count, self._clock()
        )
        self._audit.append(
            AuditTag.KEY_ESCROW_CREATE,
            actor,
            f"escrow key made, split {threshold}-of-{count} among custodians",
            key=escrow.key_id.hex(),
            household=DEPLOYMENT_HOUSEHOLD,
        )
        return [s.text for s in shares]

    def enable_escrow(self, session: SessionRef, actor: Actor) -> int:
        """The owner turns emergency access on: every household key version the unlocked
        ``session`` holds is sealed to the deployment's escrow key (future versions too, while
        on); returns the versions sealed.

        Raises:
            KeysLockedError: the session is not unlocked.
            PermissionDeniedError: not an owner's session.
            InvalidRequestError: the deployment has no escrow key.
            KeyUnavailableError: the session lacks a key version.
        """
        entry = self._owner_entry(session)
        household = entry.household
        escrow = self._store.escrow_key()
        if escrow is None:
            raise InvalidRequestError(
                "this deployment has no escrow key; its operator runs `homewarden escrow init`"
            )
        public = escrow_public_key_from_bytes(escrow.public_key)
        with self._change:
            keys = self._all_versions(entry)
            have = {
                s.key_id
                for s in self._store.household_seals(household)
                if s.escrow_key_id == escrow.id
            }
            seals = [
                NewSeal(kid, seal_for_escrow(pair, public), escrow_key_id=escrow.id)
                for kid, pair in keys.items()
                if kid not in have
            ]
            user = self._accounts.user(entry.user_id)
            self._store.set_escrow(household, True, self._clock(), user.id, seals)
        self._audit.append(
            AuditTag.KEY_ESCROW_ENABLE,
            actor,
            f"emergency access on: {len(keys)} key versions sealed to the escrow key",
            key=escrow.key_id.hex(),
            household=household,
        )
        return len(keys)

    def disable_escrow(self, owner: Principal, actor: Actor) -> None:
        """The owner turns emergency access off: every escrow seal of the household is
        destroyed and the household key rotated (new footage is beyond escrow's reach).
        Needs no unlocked session.

        Raises:
            PermissionDeniedError: not an owner.
        """
        if owner.role is not Role.OWNER or owner.household is None:
            raise PermissionDeniedError("only a household's owner switches emergency access")
        household = owner.household
        with self._change:
            was = self._store.escrow_enabled(household)
            deleted = self._store.set_escrow(household, False, self._clock(), owner.user_id)
            self._audit.append(
                AuditTag.KEY_ESCROW_DISABLE,
                actor,
                f"emergency access off: {deleted} escrow seals destroyed",
                household=household,
            )
            if was or deleted:
                self._rotate(household, actor, "emergency access turned off")

    def open_for_emergency(
        self,
        household: str,
        shares: Sequence[str],
        actor: Actor,
        *,
        request: str | None = None,
    ) -> dict[str, HouseholdKeyPair]:
        """Emergency fulfilment: combine two different custodians' ``shares`` (texts as
        typed) into the escrow key, open the household's escrow seals and return its key
        versions by key id (hex) for this one use (they are not kept). Only where the owner
        turned emergency access on and the household's policy allows emergencies.

        Raises:
            PermissionDeniedError: the owner has not opted in (the keys are owner-held: the
                provider cannot produce this content), or the policy refuses emergencies.
            KeyShareError: one share alone, the same share twice, a mistyped share, shares of
                another escrow key.
        """
        refuse = None
        if not self._store.escrow_enabled(household):
            refuse = (
                f"household {household!r} holds its own keys and has not opted into emergency "
                "access: the provider cannot produce this content"
            )
        elif not self._emergency_allowed(household):
            refuse = f"household {household!r}'s policy refuses emergency disclosure"
        if refuse is not None:
            self._audit_escrow_use(household, actor, request, f"refused: {refuse}")
            raise PermissionDeniedError(refuse)
        stored = self._store.escrow_key()
        try:
            escrow = combine_escrow_shares(shares)
            if stored is None or stored.key_id != escrow.key_id:
                raise KeyShareError(
                    "the shares rebuild an escrow key that is not this deployment's",
                    reason="another escrow key",
                )
        except KeyShareError as exc:
            self._audit_escrow_use(household, actor, request, f"refused: {exc.reason}")
            raise
        opened = {
            s.key_id.hex(): open_escrow(s.sealed, escrow, expected_key_id=KeyId(s.key_id))
            for s in self._store.household_seals(household)
            if s.escrow_key_id == stored.id
        }
        self._audit_escrow_use(
            household,
            actor,
            request,
            f"{len(opened)} key versions opened with the shares of two different custodians",
        )
        return opened

    def _audit_escrow_use(
        self, household: str, actor: Actor, request: str | None, reason: str
    ) -> None:
        self._audit.append(
            AuditTag.KEY_ESCROW_USE, actor, reason[:500], request=request, household=household
        )

    def _current_hex(self, household: str) -> str | None:
        cur = self._store.current(household)
        return None if cur is None else cur.key_id.hex()

    def _policy_allows_emergency(self, household: str) -> bool:
        rec = self._disclosure.policy(household)
        policy = Policy() if rec is None else policy_from_json(rec.policy)
        return policy.emergency_allowed

    # ---------------------------------------------------------------------------------------
    # internals: sessions

    def _session_live(self, session_id: str) -> bool:
        rec = self._accounts.store.session(session_id)
        now = self._clock()
        if rec is None or rec.stage != STAGE_FULL or rec.expires_at <= now:
            return False
        try:
            user = self._accounts.store.user(rec.user_id)
        except NotFoundError:
            return False
        life = rules.session_lifetime(Role(user.role))
        return not user.disabled and now < rec.created_at + life.absolute

    def _live_entry(self, session: SessionRef) -> _Unlocked:
        sid = session if isinstance(session, str) else session.id
        with self._lock:
            entry = self._sessions.get(sid)
        if entry is None:
            raise KeysLockedError(
                "this session has no unlocked household keys here: sign in again with your "
                "password (keys are unlocked by a password login, per session, in the "
                "memory of the server that checked it)"
            )
        if not self._session_live(sid):
            self.sessions_ended(session_id=sid)
            raise KeysLockedError("the session has ended or expired: sign in again")
        return entry

    def _owner_entry(self, session: SessionRef) -> _Unlocked:
        entry = self._live_entry(session)
        if self._accounts.user(entry.user_id).role != Role.OWNER:
            raise PermissionDeniedError("only the household's owner manages its keys")
        return entry

    def _unlocked_of(self, user_id: int, household: str) -> _Unlocked | None:
        """A live unlocked session of ``user_id`` in ``household`` here, or None."""
        with self._lock:
            candidates = [
                (sid, e)
                for sid, e in self._sessions.items()
                if e.user_id == user_id and e.household == household
            ]
        for sid, entry in candidates:
            if self._session_live(sid):
                return entry
        return None

    def _unlock(self, user: UserRecord, password: str, session: SessionRecord) -> None:
        household = self._household_person(user)
        if household is None:
            return
        rec = self._store.person(user.id)
        if rec is None:
            rec, pair = self._new_person(user, household, password, None)
        else:
            assert rec.wrap is not None
            try:
                pair = unwrap_holder_with_passphrase(
                    rec.wrap, password, expected_key_id=KeyId(rec.key_id)
                )
            except WrongKeyError:
                log.warning("the key of %s does not open with their password", user.username)
                return
        full = session.stage == STAGE_FULL
        entry = _Unlocked(
            user.id,
            household,
            rec.id,
            pair,
            self._open_seals(rec.id, pair),
            None if full else self._clock() + rules.MFA_PENDING,
        )
        with self._lock:
            (self._sessions if full else self._pending)[session.id] = entry
        current = self._store.current(household)
        self._audit.append(
            AuditTag.KEY_HOUSEHOLD_UNLOCK,
            user_actor(user),
            f"password login: {len(entry.keys)} key versions unlocked for the session"
            + ("" if full else " (waiting for TOTP)"),
            key=None if current is None else current.key_id.hex(),
            household=household,
        )
        if full:
            self._after_full_unlock(entry)

    def _after_full_unlock(self, entry: _Unlocked) -> None:
        """An owner's unlock completes the household's setup and pending grants; a member's
        completes their own pending grant when an owner is unlocked here."""
        user = self._accounts.user(entry.user_id)
        household = entry.household
        if user.role == Role.OWNER:
            holder = self._store.person(user.id)
            if holder is not None and self._finalise_setup(
                household, holder, user_actor(user), user.id
            ):
                self._refresh(entry)
            self._sync(household, entry, user_actor(user))
            return
        if not self._entitled(user):
            return
        for owner in self._accounts.users(household):
            if owner.role != Role.OWNER:
                continue
            granter = self._unlocked_of(owner.id, household)
            rec = self._store.person(user.id)
            if granter is not None and rec is not None:
                self._grant(household, user, rec, granter, user_actor(owner))
                self._refresh(entry)
                return

    # ---------------------------------------------------------------------------------------
    # internals: keys

    def _household_person(self, user: UserRecord) -> str | None:
        """The household of an owner or member (who hold keys), else None."""
        if not Role(user.role).in_household or user.household_id is None:
            return None
        return user.household_id

    def _entitled(self, user: UserRecord) -> bool:
        """Owners always; members while enabled and granted at least one camera."""
        if user.role == Role.OWNER:
            return True
        return (
            user.role == Role.MEMBER
            and not user.disabled
            and bool(self._accounts.camera_grants(user.id))
        )

    def _open_seals(self, holder_id: int, holder: HolderKeyPair) -> dict[bytes, HouseholdKeyPair]:
        opened: dict[bytes, HouseholdKeyPair] = {}
        for seal in self._store.holder_seals(holder_id):
            try:
                opened[seal.key_id] = open_holder_seal(
                    seal.sealed, holder, expected_key_id=KeyId(seal.key_id)
                )
            except SealedDataError as exc:
                log.error("a seal of household key %s does not open: %s", seal.key_id.hex(), exc)
        return opened

    def _refresh(self, entry: _Unlocked) -> None:
        """Open the seals made to the entry's person since it was unlocked (elsewhere)."""
        fresh = self._open_seals(entry.holder_id, entry.holder)
        with self._lock:
            entry.keys.update(fresh)

    def _all_versions(self, entry: _Unlocked) -> dict[bytes, HouseholdKeyPair]:
        self._refresh(entry)
        versions = self._store.versions(entry.household)
        with self._lock:
            missing = [v.version for v in versions if v.key_id not in entry.keys]
            keys = {v.key_id: entry.keys[v.key_id] for v in versions if v.key_id in entry.keys}
        if missing:
            raise KeyUnavailableError(
                f"your session lacks key versions {', '.join(map(str, missing))} of the "
                "household: a new wrap would not open their footage"
            )
        return keys

    def _new_person(
        self,
        user: UserRecord,
        household: str,
        password: str,
        old: HolderRecord | None,
        *,
        keys: dict[bytes, HouseholdKeyPair] | None = None,
    ) -> tuple[HolderRecord, HolderKeyPair]:
        """A new key pair for ``user`` wrapped under ``password``, replacing ``old`` (its
        wrap and seals destroyed), sealed ``keys`` at once."""
        pair = generate_holder_key()
        wrap = wrap_holder_with_passphrase(pair, password, self._params)
        seals = [NewSeal(kid, seal_to_holder(k, pair.public)) for kid, k in (keys or {}).items()]
        rec = self._store.add_holder(
            hks.PERSON,
            household,
            pair.key_id,
            bytes(pair.public),
            wrap,
            self._clock(),
            user_id=user.id,
            seals=seals,
            replaces=[old.id] if old is not None else [],
        )
        self._audit.append(
            AuditTag.KEY_PERSONAL_CREATE,
            user_actor(user),
            f"{user.username}'s key pair made, wrapped under their password"
            + (f", holding {len(seals)} key versions" if seals else "")
            + ("; the previous one destroyed" if old is not None else ""),
            key=pair.key_id.hex(),
            household=household,
        )
        return rec, pair

    def _new_recovery(self, household: str, keys: dict[bytes, HouseholdKeyPair]) -> str:
        """A new recovery key sealed ``keys``, replacing the old one; returns the code."""
        code = new_recovery_code()
        pair = generate_holder_key()
        old = [h.id for h in self._store.holders(household, hks.RECOVERY)]
        self._store.add_holder(
            hks.RECOVERY,
            household,
            pair.key_id,
            bytes(pair.public),
            wrap_holder_with_recovery_code(pair, code),
            self._clock(),
            seals=[NewSeal(kid, seal_to_holder(k, pair.public)) for kid, k in keys.items()],
            replaces=old,
        )
        return code.text

    def _setup_holder(self, household: str) -> tuple[HolderRecord, HolderKeyPair]:
        """The household's first-run placeholder, made (with its 0600 file) when missing."""
        for rec in self._store.holders(household, hks.SETUP):
            raw = hks.read_setup_key(hks.setup_key_path(self._keys_dir, rec.key_id))
            if raw is not None:
                return rec, holder_key_from_private_bytes(raw)
        pair = generate_holder_key()
        path = hks.setup_key_path(self._keys_dir, pair.key_id)
        hks.write_setup_key(path, bytes(pair.private))
        try:
            rec = self._store.add_holder(
                hks.SETUP, household, pair.key_id, bytes(pair.public), None, self._clock()
            )
        except HomeWardenError:
            hks.destroy_setup_key(path)
            raise
        return rec, pair

    def _finalise_setup(
        self, household: str, owner: HolderRecord, actor: Actor, owner_id: int
    ) -> bool:
        """Hand the first-run placeholder's keys to the owner and a new recovery code (kept
        for :meth:`take_setup_recovery_code`), destroy the placeholder, and rotate; False
        when the household was set up already."""
        with self._change:
            setups = self._store.holders(household, hks.SETUP)
            if not setups:
                return False
            keys: dict[bytes, HouseholdKeyPair] = {}
            for rec in setups:
                path = hks.setup_key_path(self._keys_dir, rec.key_id)
                raw = hks.read_setup_key(path)
                if raw is None:
                    log.error(
                        "the first-run key file %s is missing: footage sealed to household "
                        "%s before its owner's setup cannot be opened",
                        path,
                        household,
                    )
                    continue
                keys.update(self._open_seals(rec.id, holder_key_from_private_bytes(raw)))
            have = {s.key_id for s in self._store.holder_seals(owner.id)}
            public = holder_public_key_from_bytes(owner.public_key)
            self._store.add_seals(
                [
                    NewSeal(kid, seal_to_holder(k, public), holder_id=owner.id)
                    for kid, k in keys.items()
                    if kid not in have
                ],
                self._clock(),
            )
            self._audit.append(
                AuditTag.KEY_HOUSEHOLD_GRANT,
                actor,
                f"household setup: {len(keys)} key versions sealed to its owner",
                key=self._current_hex(household),
                household=household,
            )
            if not self._store.holders(household, hks.RECOVERY):
                code = self._new_recovery(household, keys)
                with self._lock:
                    self._setup_codes[owner_id] = code
                self._audit.append(
                    AuditTag.KEY_RECOVERY_ROTATE,
                    actor,
                    "recovery code made at the household's setup (shown once)",
                    household=household,
                )
            for rec in setups:
                self._store.delete_holder(rec.id)
                hks.destroy_setup_key(hks.setup_key_path(self._keys_dir, rec.key_id))
            self._rotate(
                household,
                actor,
                "household set up: new footage goes to a key never kept on disk in the clear",
            )
        return True

    def _grant(
        self,
        household: str,
        member: UserRecord,
        rec: HolderRecord,
        granter: _Unlocked,
        actor: Actor,
    ) -> int:
        """Seal to ``rec`` every version ``granter`` holds that it lacks; returns how many."""
        self._refresh(granter)
        with self._change:
            have = {s.key_id for s in self._store.holder_seals(rec.id)}
            public = holder_public_key_from_bytes(rec.public_key)
            with self._lock:
                give = {kid: k for kid, k in granter.keys.items() if kid not in have}
            if not give:
                return 0
            self._store.add_seals(
                [
                    NewSeal(kid, seal_to_holder(k, public), holder_id=rec.id)
                    for kid, k in give.items()
                ],
                self._clock(),
            )
        versions = {v.key_id: v.version for v in self._store.versions(household)}
        numbers = ", ".join(str(versions.get(kid, "?")) for kid in give)
        self._audit.append(
            AuditTag.KEY_HOUSEHOLD_GRANT,
            actor,
            f"key versions {numbers} sealed to {member.username}",
            key=max(give, key=lambda kid: versions.get(kid, 0)).hex(),
            household=household,
        )
        with self._lock:
            for entry in self._sessions.values():
                if entry.holder_id == rec.id:
                    entry.keys.update(give)
        return len(give)

    def _revoke(self, household: str, member: UserRecord, rec: HolderRecord, actor: Actor) -> None:
        with self._change:
            removed = self._store.delete_seals_of(rec.id)
            with self._lock:
                for table in (self._sessions, self._pending):
                    for entry in table.values():
                        if entry.user_id == member.id:
                            entry.keys.clear()
            self._audit.append(
                AuditTag.KEY_HOUSEHOLD_REVOKE,
                actor,
                f"{removed} seals of the household keys to {member.username} destroyed",
                household=household,
            )
            self._rotate(household, actor, f"{member.username}'s access revoked")

    def _sync(self, household: str, owner: _Unlocked, actor: Actor) -> None:
        """At an owner's unlock: complete pending grants; revoke seals of people no longer
        entitled (a change made while this process could not act on it)."""
        for user in self._accounts.users(household):
            if user.id == owner.user_id or not Role(user.role).in_household:
                continue
            rec = self._store.person(user.id)
            if rec is None:
                continue
            if self._entitled(user):
                self._grant(household, user, rec, owner, actor)
            elif self._store.holder_seals(rec.id):
                self._revoke(household, user, rec, actor)

    def _rotate(self, household: str, actor: Actor, reason: str) -> HouseholdKeyRecord:
        """A new key version for new footage, sealed to every remaining holder (entitled
        people, recovery, placeholder) and, while emergency access is on, to escrow."""
        with self._change:
            cur = self._store.current(household)
            version = 1 if cur is None else cur.version + 1
            holders = self._rotation_holders(household)
            pair = generate_household_key()
            seals = [
                NewSeal(
                    pair.key_id,
                    seal_to_holder(pair, holder_public_key_from_bytes(h.public_key)),
                    holder_id=h.id,
                )
                for h in holders
            ]
            escrow = self._store.escrow_key()
            if escrow is not None and self._store.escrow_enabled(household):
                public = escrow_public_key_from_bytes(escrow.public_key)
                seals.append(
                    NewSeal(pair.key_id, seal_for_escrow(pair, public), escrow_key_id=escrow.id)
                )
            rec = self._store.add_version(
                household, version, pair.key_id, bytes(pair.public), seals, self._clock()
            )
            ids = {h.id for h in holders}
            with self._lock:
                for entry in self._sessions.values():
                    if entry.holder_id in ids:
                        entry.keys[pair.key_id] = pair
            self._audit.append(
                AuditTag.KEY_HOUSEHOLD_ROTATE,
                actor,
                f"version {version} for new footage, held by {len(holders)} holders: {reason}",
                key=pair.key_id.hex(),
                household=household,
            )
            return rec

    def _rotation_holders(self, household: str) -> list[HolderRecord]:
        users = {u.id: u for u in self._accounts.users(household)}
        holders = [
            h
            for h in self._store.holders(household)
            if h.kind != hks.PERSON or (h.user_id in users and self._entitled(users[h.user_id]))
        ]
        if not holders:  # nobody could open the new version: keep it for the next owner
            holder, _pair = self._setup_holder(household)
            holders = [holder]
        return holders


class _ShellKeys:
    """The :data:`~homewarden.services.sealed_footage.KeySource` of
    :meth:`KeyRing.unlock_with_password`: one person's household key versions, in memory.

    Raises (when called):
        KeyUnavailableError: another household's key, or a version the person holds no
            seal of (never granted, revoked, rotated in after their revocation).
    """

    def __init__(self, store: HouseholdKeyStore, entry: _Unlocked) -> None:
        self._store = store
        self._entry = entry
        self._lock = threading.Lock()

    def __call__(self, household: str, key_id: bytes) -> HouseholdKeyPair:
        """Household key version ``key_id`` (16 bytes) of ``household``."""
        return _held_key(self._store, self._entry, self._lock, household, bytes(key_id))


def _held_key(
    store: HouseholdKeyStore,
    entry: _Unlocked,
    lock: threading.Lock | threading.RLock,
    household: str,
    kid: bytes,
) -> HouseholdKeyPair:
    """Household key version ``kid`` of ``household`` as held by ``entry``'s person: checked
    against the stored seals at every call (a revocation takes effect at once), opened with
    the person's key pair once and kept in ``entry.keys``.

    Raises:
        KeyUnavailableError: another household's key, or a version the person holds no seal
            of (revoked, rotated in before they were granted or after their revocation).
    """
    if household != entry.household:
        raise KeyUnavailableError(f"you hold no key of household {household!r}")
    seal = store.holder_seal(entry.holder_id, kid)
    if seal is None:
        with lock:
            entry.keys.pop(kid, None)
        raise KeyUnavailableError(
            f"you hold no household key {kid.hex()}: it was revoked from you, made after "
            "your access was revoked or before you were granted it, or is not this "
            "household's"
        )
    with lock:
        cached = entry.keys.get(kid)
    if cached is not None:
        return cached
    pair = open_holder_seal(seal.sealed, entry.holder, expected_key_id=KeyId(kid))
    with lock:
        entry.keys[kid] = pair
    return pair


def attach(
    accounts: AccountService,
    index: Index,
    audit: AuditLog,
    keys_dir: Path,
    *,
    clock: Callable[[], float] = time.time,
    params: Argon2idParams = WRAP_ARGON2ID,
) -> KeyRing:
    """A :class:`KeyRing` over ``accounts``, set as its :attr:`AccountService.keys` so logins,
    password changes and grants reach it. Call before ``accounts.ensure_households``."""
    ring = KeyRing(index, audit, accounts, keys_dir, clock=clock, params=params)
    accounts.keys = ring
    return ring
