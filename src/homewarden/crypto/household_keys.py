"""Household keys (DESIGN.md flow 8): the X25519 key pair footage is sealed to, its wraps for
each viewer's passphrase and for a recovery code, its escrow wrap, and the escrow key's
2-of-3 custodian shares.

Pure: bytes and text in, bytes, text and key objects out; no I/O. Openers raise a
:class:`~homewarden.errors.SealedDataError` subclass naming the reason; they never return None
or False.

Key roles have distinct types (sigstore-python's habit): a :data:`HouseholdPublicKey` is what
the recorder holds and seals to; a :class:`HouseholdKeyPair` (private) opens footage and lives
only in the memory of an unlocked session; an :class:`EscrowKeyPair` exists whole only while
two custodians' shares are combined for an emergency. A key id is
``BLAKE2b-128(raw 32-byte public key)`` with a personalisation per role (16 bytes), so a
household key id can never equal an escrow key id of the same bytes.

Passphrase wrap. The key-encryption key is Argon2id (RFC 9106; libsodium's
``crypto_pwhash``) of the passphrase (Unicode NFKC-normalised, as NIST SP 800-63B 5.1.1.2
advises for passwords, then UTF-8) with a fresh 16-byte salt per wrap and
:data:`WRAP_ARGON2ID`: ``t = 3`` passes over ``m = 64 MiB``, RFC 9106 section 4's second
recommended option ("if much less memory is available": t=3, 64 MiB). The first option
(t=1, 2 GiB) does not fit a small home server that may run several logins at once next to
the recorder, and libsodium computes one lane (``p = 1``), not the RFC's four, so each pass
costs the full memory walk on one core. Measured on this project's 2-core development VM
(AMD EPYC, Python 3.11, PyNaCl 1.6.2): median 80 ms per derivation (76-118 ms over runs,
with other work on the machine); t=2/64 MiB took 61 ms and t=4/256 MiB (libsodium's
SENSITIVE-class memory) 498 ms: too slow for a login, all the more on a Raspberry-Pi-class
box, which is slower again. A login then costs this once more on top of the account password's
own Argon2id check. The parameters are stored in each wrap, so they can be raised later
without breaking older wraps; unwrapping refuses stored parameters outside
[:data:`ARGON2ID_FLOOR`, :data:`ARGON2ID_CAP`] so a crafted wrap cannot make a login burn
gigabytes. The household private key (32 bytes) is then encrypted with libsodium's
``crypto_secretbox`` (XSalsa20-Poly1305) under that key with a random 24-byte nonce.

Recovery code. 128 random bits plus a 32-bit checksum (``BLAKE2b-32`` of the secret), shown
as 32 Crockford base32 symbols in 8 groups of 4 (``7QXK-...``); parsing ignores case, dashes
and spaces and reads ``O`` as ``0`` and ``I``/``L`` as ``1`` (Crockford's rules,
https://www.crockford.com/base32.html). A 128-bit random secret needs no slow KDF (RFC 9106
is for guessable passwords): the wrap key is ``BLAKE2b-256`` of the secret with the
wrap's own salt (and a personalisation).
The checksum tells a mistyped code from a wrong one before anything is tried.

Wrap layout (passphrase and recovery code alike; 122 bytes, integers big-endian)::

    off len  field
      0   4  magic b"HWKW"
      4   1  version = 1
      5   1  kind: 1 passphrase (Argon2id), 2 recovery code (BLAKE2b)
      6   4  Argon2id opslimit (passes; 0 for kind 2)
     10   8  Argon2id memlimit (bytes; 0 for kind 2)
     18  16  salt
     34  16  household key id
     50  24  secretbox nonce
     74  48  secretbox(household private key, 32 bytes) incl. its 16-byte Poly1305 tag

Kind, parameters and salt are bound because they make the key (any change fails the box);
the key id is checked against the key found inside.

Escrow. When the owner opts into emergency access the household private key is sealed
(libsodium ``crypto_box_seal``, an anonymous X25519 sealed box) to the deployment's escrow
public key (117 bytes)::

      0   4  magic b"HWEW"
      4   1  version = 1
      5  16  escrow key id
     21  16  household key id
     37  80  crypto_box_seal(household private key): 32 ephemeral pk + 32 + 16 tag

The escrow private key is split at setup among custodians, ``threshold``-of-``count``
(2-of-3) with Shamir's secret sharing, using pycryptodome's
``Crypto.Protocol.SecretSharing.Shamir``. That implementation shares 16-byte secrets (it
works in GF(2^128)), so the 32-byte key is split as two 16-byte halves, each with its own
random polynomial, and a custodian's share holds both halves' shares at the same index. A
share's text is ``HWES-`` then these 56 bytes as 90 Crockford base32 symbols in groups of 5::

      0   1  version = 1
      1   1  threshold
      2   1  count
      3   1  index (1..count)
      4  16  escrow key id
     20  16  share of key bytes 0-15
     36  16  share of key bytes 16-31
     52   4  checksum BLAKE2b-32 of bytes 0-51

Combining names the share that is mistyped (checksum), malformed, the same as another
(duplicate index), from another split; too few different shares fail; and the result must
be the escrow key the shares name, or it is refused.

Holder keys (added for the household key service, ``homewarden.services.household_keys``).
A *holder* is whoever may open household keys without the household key itself being
re-wrapped each time it changes: a person allowed to view (owner, member), the household's
recovery key, or a first-run placeholder. Each holder has its own X25519 key pair
(:class:`HolderKeyPair`, key id ``BLAKE2b-128`` personalised ``hw-holder-id``); every
household key version is sealed to each holder's public key with ``crypto_box_seal`` (a
holder seal, 117 bytes, below), so a new version (a rotation after a revocation) can be
given to every remaining holder from public keys alone, and granting a member needs the
granter's unlocked household keys but not the member's passphrase. A holder's private key is
wrapped like a household key: under a passphrase (wrap kind 3, Argon2id as above) or under a
recovery code (kind 4, BLAKE2b as above), with the holder key id in the key id field; the
kinds differ from 1 and 2 so that a holder wrap is never taken for a household key wrap.
Holder seal layout (117 bytes)::

      0   4  magic b"HWHS"
      4   1  version = 1
      5  16  holder key id
     21  16  household key id
     37  80  crypto_box_seal(household private key): 32 ephemeral pk + 32 + 16 tag

Python cannot reliably wipe memory: keys live as long as their objects. Keep key pairs in
the session that unlocked them and drop the reference on logout.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NewType

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.pwhash.argon2id
import nacl.secret
import nacl.utils
from Crypto.Protocol.SecretSharing import Shamir

from homewarden.errors import (
    InvalidRequestError,
    KeyShareError,
    SealedFormatError,
    SealedTamperedError,
    WrongKeyError,
)

#: The recorder's key: it seals segments to it and cannot open them.
HouseholdPublicKey = NewType("HouseholdPublicKey", nacl.public.PublicKey)
#: A holder's key (a viewer's, the recovery key's): household keys are sealed to it.
HolderPublicKey = NewType("HolderPublicKey", nacl.public.PublicKey)
#: The deployment's escrow public key: household keys of opted-in owners are sealed to it.
EscrowPublicKey = NewType("EscrowPublicKey", nacl.public.PublicKey)
#: ``BLAKE2b-128`` of a public key, personalised per role (16 bytes).
KeyId = NewType("KeyId", bytes)

KEY_SIZE = 32
KEY_ID_SIZE = 16
SALT_SIZE = 16
WRAP_SIZE = 122
ESCROW_WRAP_SIZE = 117
HOLDER_SEAL_SIZE = 117

_WRAP_MAGIC = b"HWKW"
_ESCROW_MAGIC = b"HWEW"
_HOLDER_SEAL_MAGIC = b"HWHS"
_VERSION = 1
_KIND_PASSPHRASE = 1
_KIND_RECOVERY = 2
_KIND_HOLDER_PASSPHRASE = 3
_KIND_HOLDER_RECOVERY = 4
#: Wrap kinds as :attr:`WrapInfo.kind` says them, and as error messages name them.
_KIND_NAMES = {
    _KIND_PASSPHRASE: "passphrase",
    _KIND_RECOVERY: "recovery",
    _KIND_HOLDER_PASSPHRASE: "holder-passphrase",
    _KIND_HOLDER_RECOVERY: "holder-recovery",
}
_KIND_SPOKEN = {
    "passphrase": "passphrase",
    "recovery": "recovery-code",
    "holder-passphrase": "holder passphrase",
    "holder-recovery": "holder recovery-code",
}
_WRAP_HEAD = struct.Struct(">4sBBIQ16s16s")  # magic, version, kind, ops, mem, salt, key id
_SALT_AT = 18
_ESCROW_HEAD = struct.Struct(">4sB16s16s")  # magic, version, escrow id, household id
_SEAL_SIZE = KEY_SIZE + nacl.bindings.crypto_box_SEALBYTES

_PERSON_HOUSEHOLD_ID = b"hw-household-id"
_PERSON_ESCROW_ID = b"hw-escrow-id"
_PERSON_HOLDER_ID = b"hw-holder-id"
_PERSON_RECOVERY_KEY = b"hw-recovery-key"
_PERSON_RECOVERY_SUM = b"hw-recovery-sum"
_PERSON_SHARE_SUM = b"hw-share-sum"

#: Crockford's base32 alphabet (no I, L, O, U).
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUE = {c: i for i, c in enumerate(_CROCKFORD)} | {"O": 0, "I": 1, "L": 1}

RECOVERY_SECRET_SIZE = 16
_RECOVERY_SUM_SIZE = 4
_RECOVERY_GROUP = 4

SHARE_PREFIX = "HWES"
_SHARE_HEAD = struct.Struct(">BBBB16s")  # version, threshold, count, index, escrow key id
_SHARE_HALF = 16
_SHARE_SUM_SIZE = 4
_SHARE_SIZE = _SHARE_HEAD.size + 2 * _SHARE_HALF + _SHARE_SUM_SIZE
_SHARE_GROUP = 5


@dataclass(frozen=True, slots=True)
class Argon2idParams:
    """Argon2id cost: ``opslimit`` passes (RFC 9106 ``t``) over ``memlimit`` bytes (``m``);
    libsodium always uses one lane (``p = 1``)."""

    opslimit: int
    memlimit: int


#: Parameters of new passphrase wraps: RFC 9106 section 4's second recommended option, t=3
#: and 64 MiB (p=1 in libsodium); ~80 ms on the 2-core dev VM (see the module docstring).
WRAP_ARGON2ID = Argon2idParams(opslimit=3, memlimit=64 * 1024 * 1024)
#: The least a stored wrap may ask for: libsodium's minimums (tests use them for speed).
ARGON2ID_FLOOR = Argon2idParams(
    opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN, memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN
)
#: The most a stored wrap may ask for (a crafted wrap must not make a login burn gigabytes).
ARGON2ID_CAP = Argon2idParams(opslimit=16, memlimit=1024 * 1024 * 1024)


def _blake2b(
    data: bytes, *, size: int, person: bytes, key: bytes = b"", salt: bytes = b""
) -> bytes:
    return hashlib.blake2b(data, digest_size=size, key=key, salt=salt, person=person).digest()


# --------------------------------------------------------------------------------------------
# key pairs


def household_key_id(public: HouseholdPublicKey) -> KeyId:
    """The 16-byte id of a household public key (``BLAKE2b-128``, personalised)."""
    return KeyId(_blake2b(bytes(public), size=KEY_ID_SIZE, person=_PERSON_HOUSEHOLD_ID))


def escrow_key_id(public: EscrowPublicKey) -> KeyId:
    """The 16-byte id of an escrow public key (``BLAKE2b-128``, personalised)."""
    return KeyId(_blake2b(bytes(public), size=KEY_ID_SIZE, person=_PERSON_ESCROW_ID))


@dataclass(frozen=True, slots=True, repr=False)
class HouseholdKeyPair:
    """A household's X25519 key pair: ``private`` opens its footage, ``public`` seals it,
    ``key_id`` names it (16 bytes). Its ``repr`` shows only the key id."""

    private: nacl.public.PrivateKey
    public: HouseholdPublicKey
    key_id: KeyId

    def __repr__(self) -> str:
        return f"HouseholdKeyPair(key_id={self.key_id.hex()})"


@dataclass(frozen=True, slots=True, repr=False)
class EscrowKeyPair:
    """The deployment's escrow X25519 key pair; ``key_id`` names it (16 bytes). Its ``repr``
    shows only the key id."""

    private: nacl.public.PrivateKey
    public: EscrowPublicKey
    key_id: KeyId

    def __repr__(self) -> str:
        return f"EscrowKeyPair(key_id={self.key_id.hex()})"


def _household_pair(private: nacl.public.PrivateKey) -> HouseholdKeyPair:
    public = HouseholdPublicKey(private.public_key)
    return HouseholdKeyPair(private, public, household_key_id(public))


def _escrow_pair(private: nacl.public.PrivateKey) -> EscrowKeyPair:
    public = EscrowPublicKey(private.public_key)
    return EscrowKeyPair(private, public, escrow_key_id(public))


def generate_household_key() -> HouseholdKeyPair:
    """A fresh random household key pair (libsodium's CSPRNG)."""
    return _household_pair(nacl.public.PrivateKey.generate())


def generate_escrow_key() -> EscrowKeyPair:
    """A fresh random escrow key pair; split it with :func:`split_escrow_key` at once and keep
    only its public half."""
    return _escrow_pair(nacl.public.PrivateKey.generate())


def _public_key(raw: bytes, what: str) -> nacl.public.PublicKey:
    if len(raw) != KEY_SIZE:
        raise SealedFormatError(
            f"a {what} public key is {KEY_SIZE} bytes, got {len(raw)}", reason="bad key size"
        )
    return nacl.public.PublicKey(bytes(raw))


def household_public_key_from_bytes(raw: bytes) -> HouseholdPublicKey:
    """A household public key from its raw 32 bytes (as stored for the recorder).

    Raises:
        SealedFormatError: not 32 bytes.
    """
    return HouseholdPublicKey(_public_key(raw, "household"))


def escrow_public_key_from_bytes(raw: bytes) -> EscrowPublicKey:
    """An escrow public key from its raw 32 bytes.

    Raises:
        SealedFormatError: not 32 bytes.
    """
    return EscrowPublicKey(_public_key(raw, "escrow"))


# --------------------------------------------------------------------------------------------
# Crockford base32


def _b32_encode(data: bytes) -> str:
    """Crockford base32 of ``data``, the last symbol zero-padded to 5 bits."""
    bits = len(data) * 8
    value = int.from_bytes(data, "big") << ((-bits) % 5)
    n = (bits + 4) // 5
    return "".join(_CROCKFORD[(value >> (5 * (n - 1 - i))) & 31] for i in range(n))


def _b32_decode(text: str, size: int, what: str) -> bytes:
    """``size`` bytes from Crockford symbols (case, ``O``/``I``/``L`` forgiven; the caller has
    removed separators).

    Raises:
        ValueError: a symbol outside the alphabet (named), or the wrong number of symbols.
    """
    n = (size * 8 + 4) // 5
    if len(text) != n:
        raise ValueError(f"{what} has {len(text)} symbols, expected {n}")
    value = 0
    for pos, ch in enumerate(text.upper(), start=1):
        digit = _CROCKFORD_VALUE.get(ch)
        if digit is None:
            raise ValueError(f"{what}: symbol {pos} {ch!r} is not a base32 symbol")
        value = value * 32 + digit
    pad = n * 5 - size * 8
    if value & ((1 << pad) - 1):
        raise ValueError(f"{what}: its last symbol is not one an encoder makes")
    return (value >> pad).to_bytes(size, "big")


def _groups(text: str, size: int) -> str:
    return "-".join(text[i : i + size] for i in range(0, len(text), size))


def _compact(text: str) -> str:
    """Upper-cased ``text`` without dashes and whitespace (how people type codes)."""
    return "".join(ch for ch in text.upper() if ch != "-" and not ch.isspace())


# --------------------------------------------------------------------------------------------
# wraps for viewers (passphrase) and recovery


@dataclass(frozen=True, slots=True, repr=False)
class RecoveryCode:
    """A recovery code: 16 random bytes (``secret``). :attr:`text` is what the owner is shown
    once (8 groups of 4 Crockford symbols, checksum included). Its ``repr`` hides it."""

    secret: bytes

    @property
    def text(self) -> str:
        """``XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX``: secret and checksum in base32."""
        payload = self.secret + _recovery_sum(self.secret)
        return _groups(_b32_encode(payload), _RECOVERY_GROUP)

    def __repr__(self) -> str:
        return "RecoveryCode(***)"


def _recovery_sum(secret: bytes) -> bytes:
    return _blake2b(secret, size=_RECOVERY_SUM_SIZE, person=_PERSON_RECOVERY_SUM)


def new_recovery_code() -> RecoveryCode:
    """A fresh recovery code of 128 random bits."""
    return RecoveryCode(nacl.utils.random(RECOVERY_SECRET_SIZE))


def parse_recovery_code(text: str) -> RecoveryCode:
    """The recovery code a person typed: case, dashes and spaces do not matter, ``O`` reads
    as ``0`` and ``I``/``L`` as ``1``.

    Raises:
        WrongKeyError: not a recovery code (wrong length, a symbol that is not base32), or
            mistyped (its checksum does not match); the message says which.
    """
    try:
        payload = _b32_decode(
            _compact(text), RECOVERY_SECRET_SIZE + _RECOVERY_SUM_SIZE, "the recovery code"
        )
    except ValueError as exc:
        raise WrongKeyError(
            f"not a recovery code: {exc}", reason="malformed recovery code"
        ) from exc
    secret, check = payload[:RECOVERY_SECRET_SIZE], payload[RECOVERY_SECRET_SIZE:]
    if not hmac.compare_digest(check, _recovery_sum(secret)):
        raise WrongKeyError(
            "the recovery code is mistyped: its checksum does not match (check each group)",
            reason="mistyped recovery code",
        )
    return RecoveryCode(secret)


def _normalised_passphrase(passphrase: str) -> bytes:
    if not passphrase:
        raise InvalidRequestError("a passphrase must not be empty")
    return unicodedata.normalize("NFKC", passphrase).encode("utf-8")


def _check_params(params: Argon2idParams) -> None:
    if not (
        ARGON2ID_FLOOR.opslimit <= params.opslimit <= ARGON2ID_CAP.opslimit
        and ARGON2ID_FLOOR.memlimit <= params.memlimit <= ARGON2ID_CAP.memlimit
    ):
        raise SealedFormatError(
            f"Argon2id parameters t={params.opslimit}, m={params.memlimit} bytes are outside "
            f"t {ARGON2ID_FLOOR.opslimit}-{ARGON2ID_CAP.opslimit}, "
            f"m {ARGON2ID_FLOOR.memlimit}-{ARGON2ID_CAP.memlimit} bytes",
            reason="Argon2id parameters out of bounds",
        )


def _passphrase_key(passphrase: str, salt: bytes, params: Argon2idParams) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        _normalised_passphrase(passphrase),
        salt,
        opslimit=params.opslimit,
        memlimit=params.memlimit,
    )


def _recovery_key(code: RecoveryCode, salt: bytes) -> bytes:
    return _blake2b(
        code.secret, size=nacl.secret.SecretBox.KEY_SIZE, person=_PERSON_RECOVERY_KEY, salt=salt
    )


def _wrap(
    kind: int,
    params: Argon2idParams,
    salt: bytes,
    kek: bytes,
    pair: HouseholdKeyPair | HolderKeyPair,
) -> bytes:
    head = _WRAP_HEAD.pack(
        _WRAP_MAGIC, _VERSION, kind, params.opslimit, params.memlimit, salt, pair.key_id
    )
    boxed = nacl.secret.SecretBox(kek).encrypt(bytes(pair.private))
    return head + bytes(boxed)


@dataclass(frozen=True, slots=True)
class WrapInfo:
    """What a wrap says about itself (readable without the secret): ``kind``
    (``"passphrase"`` or ``"recovery"`` for a household key; ``"holder-passphrase"`` or
    ``"holder-recovery"`` for a holder key), the wrapped key's ``key_id`` (16 bytes) and, for
    a passphrase wrap, its Argon2id ``params`` (None for a recovery wrap)."""

    kind: str
    key_id: KeyId
    params: Argon2idParams | None


def inspect_wrap(blob: bytes) -> WrapInfo:
    """Parse a wrap's header without opening it (to list wraps, or to re-wrap with stronger
    parameters).

    Raises:
        SealedFormatError: not a wrap of a known version or kind, or the wrong size.
    """
    if len(blob) != WRAP_SIZE:
        raise SealedFormatError(
            f"a key wrap is {WRAP_SIZE} bytes, got {len(blob)}", reason="bad wrap size"
        )
    magic, version, kind, ops, mem, _salt, key_id = _WRAP_HEAD.unpack_from(blob)
    if magic != _WRAP_MAGIC:
        raise SealedFormatError("not a HomeWarden key wrap (bad magic)", reason="bad magic")
    if version != _VERSION:
        raise SealedFormatError(
            f"key wrap version {version} is not known (this build reads {_VERSION})",
            reason="unknown version",
        )
    if kind in (_KIND_PASSPHRASE, _KIND_HOLDER_PASSPHRASE):
        return WrapInfo(_KIND_NAMES[kind], KeyId(key_id), Argon2idParams(ops, mem))
    if kind in (_KIND_RECOVERY, _KIND_HOLDER_RECOVERY) and ops == 0 and mem == 0:
        return WrapInfo(_KIND_NAMES[kind], KeyId(key_id), None)
    raise SealedFormatError(f"key wrap kind {kind} is not known", reason="unknown wrap kind")


def _open_box(blob: bytes, kek: bytes, secret_name: str) -> bytes:
    try:
        return nacl.secret.SecretBox(kek).decrypt(blob[_WRAP_HEAD.size :])
    except nacl.exceptions.CryptoError as exc:
        raise WrongKeyError(
            f"the {secret_name} does not open this key wrap (a wrong {secret_name}, or the "
            "wrap was changed)",
            reason=f"wrong {secret_name}",
        ) from exc


def _check_kind(info: WrapInfo, expected: str) -> None:
    if info.kind != expected:
        raise SealedFormatError(
            f"this is a {_KIND_SPOKEN[info.kind]} wrap, not a {_KIND_SPOKEN[expected]} wrap",
            reason="wrong wrap kind",
        )


def _unwrap(blob: bytes, kek: bytes, key_id: bytes, secret_name: str) -> HouseholdKeyPair:
    pair = _household_pair(nacl.public.PrivateKey(_open_box(blob, kek, secret_name)))
    if not hmac.compare_digest(pair.key_id, key_id):
        raise SealedTamperedError(
            f"the key wrap names household key {key_id.hex()} but holds {pair.key_id.hex()}",
            reason="wrap key id mismatch",
        )
    return pair


def _expect(pair: HouseholdKeyPair, expected: KeyId | None, what: str) -> HouseholdKeyPair:
    if expected is not None and not hmac.compare_digest(pair.key_id, expected):
        raise WrongKeyError(
            f"the {what} holds household key {pair.key_id.hex()}, not the expected "
            f"{expected.hex()}",
            reason="another household key",
        )
    return pair


def wrap_with_passphrase(
    pair: HouseholdKeyPair, passphrase: str, params: Argon2idParams = WRAP_ARGON2ID
) -> bytes:
    """The household private key wrapped under ``passphrase`` (122 bytes, layout in the module
    docstring): Argon2id with ``params`` and a fresh salt, then ``crypto_secretbox``.

    Raises:
        InvalidRequestError: an empty passphrase.
        SealedFormatError: ``params`` outside [:data:`ARGON2ID_FLOOR`, :data:`ARGON2ID_CAP`].
    """
    _check_params(params)
    salt = nacl.utils.random(SALT_SIZE)
    return _wrap(_KIND_PASSPHRASE, params, salt, _passphrase_key(passphrase, salt, params), pair)


def unwrap_with_passphrase(
    blob: bytes, passphrase: str, *, expected_key_id: KeyId | None = None
) -> HouseholdKeyPair:
    """Open a passphrase wrap (costs one Argon2id derivation at the wrap's parameters).

    Raises:
        SealedFormatError: not a passphrase wrap, or parameters out of bounds.
        InvalidRequestError: an empty passphrase.
        WrongKeyError: a wrong passphrase (or a changed wrap: the two look alike), or the key
            inside is not ``expected_key_id``.
        SealedTamperedError: the wrap's key id was changed.
    """
    info = inspect_wrap(blob)
    _check_kind(info, "passphrase")
    assert info.params is not None
    _check_params(info.params)
    salt = blob[_SALT_AT : _SALT_AT + SALT_SIZE]
    kek = _passphrase_key(passphrase, salt, info.params)
    return _expect(_unwrap(blob, kek, info.key_id, "passphrase"), expected_key_id, "wrap")


def wrap_with_recovery_code(pair: HouseholdKeyPair, code: RecoveryCode) -> bytes:
    """The household private key wrapped under a recovery code (122 bytes): a per-wrap salt,
    ``BLAKE2b-256`` key derivation, ``crypto_secretbox``."""
    salt = nacl.utils.random(SALT_SIZE)
    return _wrap(_KIND_RECOVERY, Argon2idParams(0, 0), salt, _recovery_key(code, salt), pair)


def unwrap_with_recovery_code(
    blob: bytes, code: RecoveryCode | str, *, expected_key_id: KeyId | None = None
) -> HouseholdKeyPair:
    """Open a recovery-code wrap; ``code`` may be the text as typed (see
    :func:`parse_recovery_code`).

    Raises:
        SealedFormatError: not a recovery-code wrap.
        WrongKeyError: the code is malformed, mistyped (checksum), wrong, or the key inside is
            not ``expected_key_id``.
        SealedTamperedError: the wrap's key id was changed.
    """
    info = inspect_wrap(blob)
    _check_kind(info, "recovery")
    parsed = parse_recovery_code(code) if isinstance(code, str) else code
    kek = _recovery_key(parsed, blob[_SALT_AT : _SALT_AT + SALT_SIZE])
    return _expect(_unwrap(blob, kek, info.key_id, "recovery code"), expected_key_id, "wrap")


# --------------------------------------------------------------------------------------------
# holder keys (see "Holder keys" in the module docstring)


def holder_key_id(public: HolderPublicKey) -> KeyId:
    """The 16-byte id of a holder public key (``BLAKE2b-128``, personalised)."""
    return KeyId(_blake2b(bytes(public), size=KEY_ID_SIZE, person=_PERSON_HOLDER_ID))


@dataclass(frozen=True, slots=True, repr=False)
class HolderKeyPair:
    """A holder's X25519 key pair (a viewer's, or a household's recovery key): household
    keys are sealed to ``public``; ``key_id`` names it (16 bytes). Its ``repr`` shows only
    the key id."""

    private: nacl.public.PrivateKey
    public: HolderPublicKey
    key_id: KeyId

    def __repr__(self) -> str:
        return f"HolderKeyPair(key_id={self.key_id.hex()})"


def _holder_pair(private: nacl.public.PrivateKey) -> HolderKeyPair:
    public = HolderPublicKey(private.public_key)
    return HolderKeyPair(private, public, holder_key_id(public))


def generate_holder_key() -> HolderKeyPair:
    """A fresh random holder key pair (libsodium's CSPRNG)."""
    return _holder_pair(nacl.public.PrivateKey.generate())


def holder_key_from_private_bytes(raw: bytes) -> HolderKeyPair:
    """A holder key pair from its raw 32-byte private key (as kept in a 0600 key file).

    Raises:
        SealedFormatError: not 32 bytes.
    """
    if len(raw) != KEY_SIZE:
        raise SealedFormatError(
            f"a holder private key is {KEY_SIZE} bytes, got {len(raw)}", reason="bad key size"
        )
    return _holder_pair(nacl.public.PrivateKey(bytes(raw)))


def holder_public_key_from_bytes(raw: bytes) -> HolderPublicKey:
    """A holder public key from its raw 32 bytes (as stored).

    Raises:
        SealedFormatError: not 32 bytes.
    """
    return HolderPublicKey(_public_key(raw, "holder"))


def _unwrap_holder(blob: bytes, kek: bytes, key_id: bytes, secret_name: str) -> HolderKeyPair:
    pair = _holder_pair(nacl.public.PrivateKey(_open_box(blob, kek, secret_name)))
    if not hmac.compare_digest(pair.key_id, key_id):
        raise SealedTamperedError(
            f"the key wrap names holder key {key_id.hex()} but holds {pair.key_id.hex()}",
            reason="wrap key id mismatch",
        )
    return pair


def wrap_holder_with_passphrase(
    pair: HolderKeyPair, passphrase: str, params: Argon2idParams = WRAP_ARGON2ID
) -> bytes:
    """A holder's private key wrapped under ``passphrase`` (122 bytes, wrap kind 3):
    Argon2id with ``params`` (default :data:`WRAP_ARGON2ID`) and a fresh salt, then
    ``crypto_secretbox``.

    Raises:
        InvalidRequestError: an empty passphrase.
        SealedFormatError: ``params`` outside [:data:`ARGON2ID_FLOOR`, :data:`ARGON2ID_CAP`].
    """
    _check_params(params)
    salt = nacl.utils.random(SALT_SIZE)
    kek = _passphrase_key(passphrase, salt, params)
    return _wrap(_KIND_HOLDER_PASSPHRASE, params, salt, kek, pair)


def unwrap_holder_with_passphrase(
    blob: bytes, passphrase: str, *, expected_key_id: KeyId | None = None
) -> HolderKeyPair:
    """Open a holder passphrase wrap (one Argon2id derivation at the wrap's parameters).

    Raises:
        SealedFormatError: not a holder passphrase wrap, or parameters out of bounds.
        InvalidRequestError: an empty passphrase.
        WrongKeyError: a wrong passphrase (or a changed wrap), or the key inside is not
            ``expected_key_id``.
        SealedTamperedError: the wrap's key id was changed.
    """
    info = inspect_wrap(blob)
    _check_kind(info, "holder-passphrase")
    assert info.params is not None
    _check_params(info.params)
    kek = _passphrase_key(passphrase, blob[_SALT_AT : _SALT_AT + SALT_SIZE], info.params)
    pair = _unwrap_holder(blob, kek, info.key_id, "passphrase")
    _expect_holder(pair, expected_key_id)
    return pair


def wrap_holder_with_recovery_code(pair: HolderKeyPair, code: RecoveryCode) -> bytes:
    """A holder's private key (a household's recovery key) wrapped under a recovery code
    (122 bytes, wrap kind 4): per-wrap salt, ``BLAKE2b-256`` derivation, ``crypto_secretbox``."""
    salt = nacl.utils.random(SALT_SIZE)
    kek = _recovery_key(code, salt)
    return _wrap(_KIND_HOLDER_RECOVERY, Argon2idParams(0, 0), salt, kek, pair)


def unwrap_holder_with_recovery_code(
    blob: bytes, code: RecoveryCode | str, *, expected_key_id: KeyId | None = None
) -> HolderKeyPair:
    """Open a holder recovery-code wrap; ``code`` may be the text as typed.

    Raises:
        SealedFormatError: not a holder recovery-code wrap.
        WrongKeyError: the code is malformed, mistyped (checksum) or wrong, or the key inside
            is not ``expected_key_id``.
        SealedTamperedError: the wrap's key id was changed.
    """
    info = inspect_wrap(blob)
    _check_kind(info, "holder-recovery")
    parsed = parse_recovery_code(code) if isinstance(code, str) else code
    kek = _recovery_key(parsed, blob[_SALT_AT : _SALT_AT + SALT_SIZE])
    pair = _unwrap_holder(blob, kek, info.key_id, "recovery code")
    _expect_holder(pair, expected_key_id)
    return pair


def _expect_holder(pair: HolderKeyPair, expected: KeyId | None) -> None:
    if expected is not None and not hmac.compare_digest(pair.key_id, expected):
        raise WrongKeyError(
            f"the wrap holds holder key {pair.key_id.hex()}, not the expected {expected.hex()}",
            reason="another holder key",
        )


@dataclass(frozen=True, slots=True)
class _SealKind:
    """How one kind of household-key seal (to a holder, to the escrow key) names itself."""

    magic: bytes
    name: str  # "holder seal"
    article: str  # "a"
    recipient: str  # "holder"
    box_reason: str
    mismatch_reason: str


_HOLDER_SEAL = _SealKind(
    _HOLDER_SEAL_MAGIC, "holder seal", "a", "holder", "holder box does not open",
    "seal key id mismatch",
)  # fmt: skip
_ESCROW_WRAP = _SealKind(
    _ESCROW_MAGIC, "escrow wrap", "an", "escrow", "escrow box does not open",
    "wrap key id mismatch",
)  # fmt: skip


def _seal_household(kind: _SealKind, pair: HouseholdKeyPair, to: bytes, to_id: KeyId) -> bytes:
    head = _ESCROW_HEAD.pack(kind.magic, _VERSION, to_id, pair.key_id)
    return head + nacl.bindings.crypto_box_seal(bytes(pair.private), to)


def _sealed_key_ids(kind: _SealKind, blob: bytes) -> tuple[KeyId, KeyId]:
    if len(blob) != HOLDER_SEAL_SIZE:  # == ESCROW_WRAP_SIZE: one layout
        raise SealedFormatError(
            f"{kind.article} {kind.name} is {HOLDER_SEAL_SIZE} bytes, got {len(blob)}",
            reason="bad size",
        )
    magic, version, recipient_id, household_id = _ESCROW_HEAD.unpack_from(blob)
    if magic != kind.magic:
        raise SealedFormatError(f"not a HomeWarden {kind.name} (bad magic)", reason="bad magic")
    if version != _VERSION:
        raise SealedFormatError(
            f"{kind.name} version {version} is not known", reason="unknown version"
        )
    return KeyId(recipient_id), KeyId(household_id)


def _open_sealed_household(
    kind: _SealKind,
    blob: bytes,
    recipient: tuple[KeyId, bytes, bytes],
    expected_key_id: KeyId | None,
) -> HouseholdKeyPair:
    """Open a seal of ``kind`` with ``recipient`` = (key id, public, private) (raises as
    :func:`open_holder_seal` and :func:`open_escrow` say)."""
    recipient_id, public, private = recipient
    sealed_to, household_id = _sealed_key_ids(kind, blob)
    if not hmac.compare_digest(sealed_to, recipient_id):
        raise WrongKeyError(
            f"sealed to {kind.recipient} key {sealed_to.hex()}, not {recipient_id.hex()}",
            reason=f"another {kind.recipient} key",
        )
    try:
        raw = nacl.bindings.crypto_box_seal_open(blob[_ESCROW_HEAD.size :], public, private)
    except nacl.exceptions.CryptoError as exc:
        raise SealedTamperedError(
            f"the {kind.name} does not open although its {kind.recipient} key id matches (changed)",
            reason=kind.box_reason,
        ) from exc
    pair = _household_pair(nacl.public.PrivateKey(raw))
    if not hmac.compare_digest(pair.key_id, household_id):
        raise SealedTamperedError(
            f"the {kind.name} names household key {household_id.hex()} but holds "
            f"{pair.key_id.hex()}",
            reason=kind.mismatch_reason,
        )
    return _expect(pair, expected_key_id, kind.name)


def seal_to_holder(pair: HouseholdKeyPair, holder: HolderPublicKey) -> bytes:
    """The household private key sealed to a holder's public key (117 bytes, layout in the
    module docstring): needs no secret of the holder's."""
    return _seal_household(_HOLDER_SEAL, pair, bytes(holder), holder_key_id(holder))


def holder_seal_key_ids(blob: bytes) -> tuple[KeyId, KeyId]:
    """``(holder key id, household key id)`` a holder seal names, read without opening it.

    Raises:
        SealedFormatError: not a holder seal of a known version, or the wrong size.
    """
    return _sealed_key_ids(_HOLDER_SEAL, blob)


def open_holder_seal(
    blob: bytes, holder: HolderKeyPair, *, expected_key_id: KeyId | None = None
) -> HouseholdKeyPair:
    """Open a holder seal with the holder's key pair.

    Raises:
        SealedFormatError: not a holder seal of a known version, or the wrong size.
        WrongKeyError: sealed to another holder, or the household key inside is not
            ``expected_key_id``.
        SealedTamperedError: the key ids match but the box does not open, or the key inside
            is not the one the seal names.
    """
    recipient = (holder.key_id, bytes(holder.public), bytes(holder.private))
    return _open_sealed_household(_HOLDER_SEAL, blob, recipient, expected_key_id)


# --------------------------------------------------------------------------------------------
# escrow


def seal_for_escrow(pair: HouseholdKeyPair, escrow_public: EscrowPublicKey) -> bytes:
    """The household private key sealed to the deployment's escrow public key (117 bytes,
    layout in the module docstring)."""
    return _seal_household(_ESCROW_WRAP, pair, bytes(escrow_public), escrow_key_id(escrow_public))


def open_escrow(
    blob: bytes, escrow: EscrowKeyPair, *, expected_key_id: KeyId | None = None
) -> HouseholdKeyPair:
    """Open an escrow wrap with the (recombined) escrow key pair.

    Raises:
        SealedFormatError: not an escrow wrap of a known version, or the wrong size.
        WrongKeyError: sealed to another escrow key, or the household key inside is not
            ``expected_key_id``.
        SealedTamperedError: the key ids match but the sealed box does not open, or the key
            inside is not the one the wrap names.
    """
    recipient = (escrow.key_id, bytes(escrow.public), bytes(escrow.private))
    return _open_sealed_household(_ESCROW_WRAP, blob, recipient, expected_key_id)


@dataclass(frozen=True, slots=True, repr=False)
class EscrowShare:
    """One custodian's share of the escrow private key: ``index`` (1..``count``) of a
    ``threshold``-of-``count`` split of the key ``escrow_key_id``; ``halves`` are the shares
    of its two 16-byte halves. :attr:`text` is what the custodian keeps."""

    threshold: int
    count: int
    index: int
    escrow_key_id: KeyId
    halves: tuple[bytes, bytes]

    def _payload(self) -> bytes:
        head = _SHARE_HEAD.pack(
            _VERSION, self.threshold, self.count, self.index, self.escrow_key_id
        )
        body = head + self.halves[0] + self.halves[1]
        return body + _blake2b(body, size=_SHARE_SUM_SIZE, person=_PERSON_SHARE_SUM)

    @property
    def text(self) -> str:
        """``HWES-XXXXX-...``: the share in 18 groups of 5 Crockford symbols."""
        return f"{SHARE_PREFIX}-" + _groups(_b32_encode(self._payload()), _SHARE_GROUP)

    def __repr__(self) -> str:
        return (
            f"EscrowShare({self.index} of {self.count}, threshold {self.threshold}, "
            f"key {self.escrow_key_id.hex()})"
        )


def split_escrow_key(
    escrow: EscrowKeyPair, threshold: int = 2, count: int = 3
) -> list[EscrowShare]:
    """Split the escrow private key into ``count`` custodian shares, any ``threshold`` of
    which rebuild it (Shamir, per 16-byte half, same indexes; see the module docstring).

    Raises:
        InvalidRequestError: not ``2 <= threshold <= count <= 255``.
    """
    if not 2 <= threshold <= count <= 255:
        raise InvalidRequestError(f"cannot split {threshold}-of-{count}: need 2 <= k <= n <= 255")
    raw = bytes(escrow.private)
    low = Shamir.split(threshold, count, raw[:_SHARE_HALF])
    high = Shamir.split(threshold, count, raw[_SHARE_HALF:])
    shares = []
    for (i, a), (j, b) in zip(low, high, strict=True):
        assert i == j  # pycryptodome numbers shares 1..n in order
        shares.append(EscrowShare(threshold, count, i, escrow.key_id, (a, b)))
    return shares


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def parse_escrow_share(text: str, *, position: int = 1) -> EscrowShare:
    """A custodian's share as typed or pasted (case, dashes, spaces forgiven; ``O`` is ``0``,
    ``I``/``L`` are ``1``). ``position`` (1-based) names it in errors.

    Raises:
        KeyShareError: not a share (prefix, length, a non-base32 symbol), mistyped (its
            checksum does not match), or an impossible index or threshold.
    """
    where = f"the {_ordinal(position)} share"
    compact = _compact(text)
    if not compact.startswith(SHARE_PREFIX):
        raise KeyShareError(
            f"{where} does not start with {SHARE_PREFIX}-: not an escrow share",
            reason="malformed share",
            share_position=position,
        )
    try:
        payload = _b32_decode(compact[len(SHARE_PREFIX) :], _SHARE_SIZE, where)
    except ValueError as exc:
        raise KeyShareError(
            f"{exc}: not an escrow share", reason="malformed share", share_position=position
        ) from exc
    body, check = payload[:-_SHARE_SUM_SIZE], payload[-_SHARE_SUM_SIZE:]
    if not hmac.compare_digest(
        check, _blake2b(body, size=_SHARE_SUM_SIZE, person=_PERSON_SHARE_SUM)
    ):
        raise KeyShareError(
            f"{where} is mistyped: its checksum does not match (check each group)",
            reason="mistyped share",
            share_position=position,
        )
    version, threshold, count, index, key_id = _SHARE_HEAD.unpack_from(body)
    if version != _VERSION or not 2 <= threshold <= count or not 1 <= index <= count:
        raise KeyShareError(
            f"{where} is of version {version}, {threshold}-of-{count}, index {index}: not one "
            "this build can use",
            reason="malformed share",
            share_position=position,
        )
    halves = (
        body[_SHARE_HEAD.size : _SHARE_HEAD.size + _SHARE_HALF],
        body[_SHARE_HEAD.size + _SHARE_HALF :],
    )
    return EscrowShare(threshold, count, index, KeyId(key_id), halves)


def combine_escrow_shares(shares: Sequence[str | EscrowShare]) -> EscrowKeyPair:
    """Rebuild the escrow key pair from custodians' shares (texts as typed, or parsed).

    Raises:
        KeyShareError: a share is malformed or mistyped (named by its position), two are the
            same share, they come from different splits, fewer different shares than the
            threshold were given, or they do not rebuild the key they name.
    """
    parsed = [
        parse_escrow_share(s, position=p) if isinstance(s, str) else s
        for p, s in enumerate(shares, start=1)
    ]
    if not parsed:
        raise KeyShareError("no escrow share given", reason="too few shares")
    first = parsed[0]
    seen: dict[int, int] = {}
    for position, share in enumerate(parsed, start=1):
        if (share.escrow_key_id, share.threshold, share.count) != (
            first.escrow_key_id,
            first.threshold,
            first.count,
        ):
            raise KeyShareError(
                f"the {_ordinal(position)} share is of another split (escrow key "
                f"{share.escrow_key_id.hex()}, {share.threshold}-of-{share.count}) than the "
                f"1st (escrow key {first.escrow_key_id.hex()}, {first.threshold}-of-"
                f"{first.count})",
                reason="shares of different splits",
                share_position=position,
            )
        if share.index in seen:
            raise KeyShareError(
                f"the {_ordinal(position)} share is the same share as the "
                f"{_ordinal(seen[share.index])} (index {share.index}): the shares of "
                f"{first.threshold} different custodians are needed",
                reason="duplicate share",
                share_position=position,
            )
        seen[share.index] = position
    if len(parsed) < first.threshold:
        raise KeyShareError(
            f"{len(parsed)} share given; the escrow key needs {first.threshold} different "
            "custodians' shares",
            reason="too few shares",
        )
    use = parsed[: first.threshold]
    low = Shamir.combine([(s.index, s.halves[0]) for s in use])
    high = Shamir.combine([(s.index, s.halves[1]) for s in use])
    pair = _escrow_pair(nacl.public.PrivateKey(low + high))
    if not hmac.compare_digest(pair.key_id, first.escrow_key_id):
        raise KeyShareError(
            "the shares do not rebuild the escrow key they name: one of them is wrong",
            reason="shares do not match",
        )
    return pair
