"""Ed25519 (PyNaCl / libsodium) keys of the audit log and its signed tree heads.

Key roles have distinct types (sigstore-python's habit, ``sigstore/_internal/trust.py``): a
:data:`LogSigningKey` signs tree heads of the audit log and nothing else, and only a
:data:`LogPublicKey` checks them, so a key meant for another role (a package or escrow key)
cannot be passed here by mistake without a type error.

A key id is ``SHA-256(raw 32-byte Ed25519 public key)`` (32 bytes).

A signed tree head (STH) is a :class:`TreeHead` - ``tree_size`` (entries), ``root_hash``
(RFC 9162 MTH, 32 bytes), ``timestamp_ms`` (UTC epoch milliseconds), ``key_id`` - and an
Ed25519 signature over its canonical bytes (:meth:`TreeHead.signed_bytes`): a fixed layout in
the spirit of RFC 9162 4.10's ``TreeHeadSignature``, with a domain-separation label so the
signature cannot be replayed as a signature over anything else::

    b"homewarden/audit-tree-head/v1\\x00"  (30 bytes)
    tree_size     uint64 big-endian
    timestamp_ms  uint64 big-endian
    root_hash     32 bytes
    key_id        32 bytes

The same deployment key also signs evidence-package manifests (:func:`sign_manifest`): a
recipient then pins one public key for both the package and the audit log heads it carries.
A manifest signature covers the exact manifest bytes, which must be a JSON object (they start
with ``{``), so it can never be taken for a tree-head signature (those bytes start with the
``homewarden/...`` label) nor the other way round.

Verifiers raise :class:`~homewarden.errors.InvalidSignatureError`; they never return False.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NewType

import nacl.exceptions
import nacl.signing

from homewarden.errors import InvalidSignatureError, VerificationError

#: Signs audit-log tree heads. Only :func:`generate_log_key` and :func:`log_key_from_seed`
#: make one.
LogSigningKey = NewType("LogSigningKey", nacl.signing.SigningKey)
#: Checks audit-log tree heads.
LogPublicKey = NewType("LogPublicKey", nacl.signing.VerifyKey)

#: Bytes of an Ed25519 seed (the private key file), public key and signature.
SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
#: Bytes of a key id (SHA-256 of the public key) and of a root hash.
KEY_ID_SIZE = 32
ROOT_SIZE = 32

_STH_LABEL = b"homewarden/audit-tree-head/v1\x00"
_U64_MAX = 2**64 - 1


def generate_log_key() -> LogSigningKey:
    """A fresh random Ed25519 log signing key (libsodium's CSPRNG)."""
    return LogSigningKey(nacl.signing.SigningKey.generate())


def log_key_from_seed(seed: bytes) -> LogSigningKey:
    """The log signing key of a stored 32-byte seed.

    Raises:
        VerificationError: the seed is not 32 bytes.
    """
    if len(seed) != SEED_SIZE:
        raise VerificationError(f"a log signing key seed is {SEED_SIZE} bytes, got {len(seed)}")
    return LogSigningKey(nacl.signing.SigningKey(bytes(seed)))


def log_key_seed(key: LogSigningKey) -> bytes:
    """The 32-byte seed to store a log signing key (keep it secret, mode 0600)."""
    return bytes(key)


def log_public_key(key: LogSigningKey) -> LogPublicKey:
    """The public half of a log signing key."""
    return LogPublicKey(key.verify_key)


def log_public_key_from_bytes(raw: bytes) -> LogPublicKey:
    """A log public key from its raw 32 bytes.

    Raises:
        InvalidSignatureError: not 32 bytes, or not a valid Ed25519 point.
    """
    if len(raw) != PUBLIC_KEY_SIZE:
        raise InvalidSignatureError(f"a public key is {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    try:
        return LogPublicKey(nacl.signing.VerifyKey(bytes(raw)))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise InvalidSignatureError(f"not an Ed25519 public key: {exc}") from exc


def key_id(public: LogPublicKey) -> bytes:
    """``SHA-256`` of the raw 32-byte public key (32 bytes)."""
    return hashlib.sha256(bytes(public)).digest()


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What a signed tree head asserts: the log held ``tree_size`` entries whose RFC 9162
    root was ``root_hash`` (32 bytes) at ``timestamp_ms`` (UTC epoch ms), signed by
    ``key_id`` (32 bytes)."""

    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    key_id: bytes

    def __post_init__(self) -> None:
        for name in ("tree_size", "timestamp_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
                raise VerificationError(f"tree head {name} must be a uint64, got {value!r}")
        if len(self.root_hash) != ROOT_SIZE:
            raise VerificationError(f"tree head root_hash must be {ROOT_SIZE} bytes")
        if len(self.key_id) != KEY_ID_SIZE:
            raise VerificationError(f"tree head key_id must be {KEY_ID_SIZE} bytes")

    def signed_bytes(self) -> bytes:
        """The canonical bytes the signature covers (layout in the module docstring)."""
        return (
            _STH_LABEL
            + struct.pack(">QQ", self.tree_size, self.timestamp_ms)
            + bytes(self.root_hash)
            + bytes(self.key_id)
        )


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """A :class:`TreeHead` with its 64-byte Ed25519 ``signature``."""

    head: TreeHead
    signature: bytes

    @property
    def tree_size(self) -> int:
        """Entries the head covers."""
        return self.head.tree_size

    @property
    def root_hash(self) -> bytes:
        """RFC 9162 root of the first ``tree_size`` entries (32 bytes)."""
        return self.head.root_hash

    @property
    def timestamp_ms(self) -> int:
        """When it was signed, UTC epoch milliseconds."""
        return self.head.timestamp_ms

    @property
    def key_id(self) -> bytes:
        """SHA-256 of the signing key's public key (32 bytes)."""
        return self.head.key_id

    def to_json(self) -> dict[str, Any]:
        """JSON form: hashes and key id in lowercase hex, the signature in base64."""
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp_ms": self.timestamp_ms,
            "key_id": self.key_id.hex(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Any) -> SignedTreeHead:
        """Parse :meth:`to_json`'s form.

        Raises:
            VerificationError: not an object of exactly those fields with valid values.
        """
        fields = {"tree_size", "root_hash", "timestamp_ms", "key_id", "signature"}
        if not isinstance(data, dict) or set(data) != fields:
            raise VerificationError(
                f"a signed tree head is a JSON object with exactly {sorted(fields)}"
            )
        try:
            head = TreeHead(
                tree_size=data["tree_size"],
                root_hash=bytes.fromhex(data["root_hash"]),
                timestamp_ms=data["timestamp_ms"],
                key_id=bytes.fromhex(data["key_id"]),
            )
            signature = base64.b64decode(data["signature"], validate=True)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise VerificationError(f"malformed signed tree head: {exc}") from exc
        if len(signature) != SIGNATURE_SIZE:
            raise VerificationError(f"a tree head signature is {SIGNATURE_SIZE} bytes")
        return cls(head, signature)


def sign_tree_head(head: TreeHead, key: LogSigningKey) -> SignedTreeHead:
    """Sign ``head`` with the log key whose id it names.

    Raises:
        InvalidSignatureError: ``head.key_id`` is not the id of ``key``.
    """
    if head.key_id != key_id(log_public_key(key)):
        raise InvalidSignatureError("tree head names another key than the one signing it")
    signature = key.sign(head.signed_bytes()).signature
    return SignedTreeHead(head, bytes(signature))


def verify_tree_head(sth: SignedTreeHead, keys: Mapping[bytes, LogPublicKey]) -> None:
    """Check the signature of ``sth`` with the key its ``key_id`` names among ``keys``
    (key id -> public key; old, rotated keys included).

    Raises:
        InvalidSignatureError: unknown key id, a key whose id does not match, or a signature
            that does not verify.
    """
    public = keys.get(sth.key_id)
    if public is None:
        raise InvalidSignatureError(
            f"tree head of size {sth.tree_size} is signed by unknown key {sth.key_id.hex()}"
        )
    if key_id(public) != sth.key_id:
        raise InvalidSignatureError(f"public key listed as {sth.key_id.hex()} has another id")
    try:
        public.verify(sth.head.signed_bytes(), bytes(sth.signature))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise InvalidSignatureError(
            f"signature of the tree head of size {sth.tree_size} (signed at "
            f"{sth.timestamp_ms} ms) does not verify with key {sth.key_id.hex()[:16]}"
        ) from exc


def _check_manifest_bytes(manifest: bytes) -> None:
    if not manifest.startswith(b"{"):
        raise InvalidSignatureError("a signed manifest is a JSON object (its bytes start with {)")


def sign_manifest(manifest: bytes, key: LogSigningKey) -> bytes:
    """The 64-byte Ed25519 signature of the exact ``manifest`` bytes (an evidence package's
    ``manifest.json``) with the deployment key.

    Raises:
        InvalidSignatureError: ``manifest`` is not a JSON object's bytes (domain separation
            from tree heads, see the module docstring).
    """
    _check_manifest_bytes(manifest)
    return bytes(key.sign(bytes(manifest)).signature)


def verify_manifest(manifest: bytes, signature: bytes, public: LogPublicKey) -> None:
    """Check ``signature`` (64 bytes) over the exact ``manifest`` bytes with ``public``.

    Raises:
        InvalidSignatureError: malformed signature, not a manifest, or it does not verify.
    """
    _check_manifest_bytes(manifest)
    if len(signature) != SIGNATURE_SIZE:
        raise InvalidSignatureError(
            f"a manifest signature is {SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    try:
        public.verify(bytes(manifest), bytes(signature))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise InvalidSignatureError(
            f"the manifest signature does not verify with key {key_id(public).hex()[:16]}"
        ) from exc
