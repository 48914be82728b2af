"""Signing and verifying webhook calls the Standard Webhooks way (symmetric ``v1`` scheme).

Source: the Standard Webhooks specification 1.0.0 (https://www.standardwebhooks.com/, text in
``spec/standard-webhooks.md`` of github.com/standard-webhooks/standard-webhooks), sections
"Signature scheme", "Webhook headers" and "Verifying signatures":

- a call carries three headers: ``webhook-id`` (the message id: the same on every retry, a
  receiver's idempotency key), ``webhook-timestamp`` (integer UTC epoch seconds of this
  attempt) and ``webhook-signature``, a space-separated list of ``<version>,<base64>``;
- the ``v1`` signature is ``base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))`` over
  the exact body bytes sent (RFC 2104 HMAC, FIPS 180-4 SHA-256, RFC 4648 section 4 base64);
- the secret is random, 24 to 64 bytes (we make 32), shown as ``whsec_`` + base64;
- a receiver compares in constant time, accepts when any ``v1`` signature matches (several
  are sent while a secret is being rotated), and refuses a timestamp further than a tolerance
  from its clock; :data:`TOLERANCE` is the 5 minutes of the specification's reference
  libraries (``libraries/python/standardwebhooks/webhooks.py``: ``timedelta(minutes=5)``).

The message id and timestamp must not contain ``.`` (the specification: otherwise the signed
content would be ambiguous); :func:`sign` refuses such an id.

Pure: no I/O, no clock (callers pass ``now``). :func:`verify` raises a
:class:`~homewarden.errors.WebhookSignatureError` subclass naming the reason; it never
returns False.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import NewType

from homewarden.errors import (
    InvalidRequestError,
    WebhookHeaderError,
    WebhookMismatchError,
    WebhookTimestampError,
)

#: The raw bytes of a webhook's signing secret (not its ``whsec_`` text form).
WebhookSecret = NewType("WebhookSecret", bytes)

#: Prefix of a secret's text form.
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
#: Bytes of a secret we make (the specification allows 24 to 64).
SECRET_SIZE = 32
MIN_SECRET_SIZE = 24
MAX_SECRET_SIZE = 64
#: Seconds a timestamp may be from the receiver's clock, either way (see the module docstring).
TOLERANCE = 300.0
#: Header names (lower case; HTTP header names are case-insensitive, RFC 9110 section 5.1).
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
#: The symmetric scheme's version tag.
VERSION = "v1"
#: Longest message id we send or accept (ours are ``msg_`` and a few dozen characters).
MAX_ID_LENGTH = 256
#: Signatures a header may list (rotation sends two; more is not a real sender).
MAX_SIGNATURES = 16

_DIGITS = re.compile(r"[0-9]{1,12}")


def _check_id(msg_id: str) -> None:
    # Printable ASCII without "." (the separator of the signed content), "," or space.
    if not msg_id or len(msg_id) > MAX_ID_LENGTH:
        raise WebhookHeaderError(f"{ID_HEADER} must be 1-{MAX_ID_LENGTH} characters")
    if "." in msg_id or not all("!" <= c <= "~" and c != "," for c in msg_id):
        raise WebhookHeaderError(f"{ID_HEADER} must be printable ASCII without '.', ',' or spaces")


def format_secret(raw: bytes) -> str:
    """The text form of a secret: ``whsec_`` + base64 of ``raw`` (24-64 bytes).

    Raises:
        InvalidRequestError: ``raw`` is shorter than 24 or longer than 64 bytes.
    """
    if not MIN_SECRET_SIZE <= len(raw) <= MAX_SECRET_SIZE:
        raise InvalidRequestError(
            f"a webhook secret is {MIN_SECRET_SIZE}-{MAX_SECRET_SIZE} bytes, got {len(raw)}"
        )
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_secret(text: str) -> WebhookSecret:
    """The raw secret of its text form (``whsec_`` + base64; the prefix may be left out, as
    the reference libraries allow).

    Raises:
        InvalidRequestError: not base64, or not 24-64 bytes once decoded.
    """
    body = text.strip().removeprefix(SECRET_PREFIX)
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("a webhook secret is whsec_ followed by base64") from None
    if not MIN_SECRET_SIZE <= len(raw) <= MAX_SECRET_SIZE:
        raise InvalidRequestError(
            f"a webhook secret is {MIN_SECRET_SIZE}-{MAX_SECRET_SIZE} bytes, got {len(raw)}"
        )
    return WebhookSecret(raw)


def _digest(secret: WebhookSecret, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode("ascii") + body
    return hmac.new(secret, signed, hashlib.sha256).digest()


def sign(secret: WebhookSecret, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of ``body`` (the exact bytes sent) under message id
    ``msg_id`` at ``timestamp`` (integer UTC epoch seconds).

    Raises:
        WebhookHeaderError: ``msg_id`` is empty, too long, or holds ``.``, ``,`` or spaces;
            ``timestamp`` is negative.
    """
    _check_id(msg_id)
    if timestamp < 0:
        raise WebhookHeaderError(f"{TIMESTAMP_HEADER} must not be negative")
    return f"{VERSION},{base64.b64encode(_digest(secret, msg_id, timestamp, body)).decode()}"


def signed_headers(
    secret: WebhookSecret | tuple[WebhookSecret, ...], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers of a call: ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature`` (one ``v1`` signature per secret in ``secret``, space-separated,
    for a rotation; usually one).

    Raises:
        WebhookHeaderError: as :func:`sign`.
    """
    keys = secret if isinstance(secret, tuple) else (secret,)
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(sign(k, msg_id, timestamp, body) for k in keys),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    found = [v for k, v in headers.items() if k.lower() == name]
    if not found or not found[0].strip():
        raise WebhookHeaderError(f"the {name} header is missing")
    if len(found) > 1:
        raise WebhookHeaderError(f"the {name} header is given more than once")
    return found[0].strip()


def verify(
    secret: WebhookSecret,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = TOLERANCE,
) -> None:
    """Check a received call: ``headers`` as received (names in any case), ``body`` the raw
    bytes (never a re-serialised parse: a changed space fails), ``now`` the receiver's clock
    (UTC epoch seconds). Returns None when it verifies.

    Raises:
        WebhookHeaderError: a header is missing, given twice or malformed (the id, a
            timestamp that is not an integer, a signature list with no ``v1`` entry or bad
            base64).
        WebhookTimestampError: the timestamp is more than ``tolerance`` seconds before or
            after ``now`` (a replayed or delayed call).
        WebhookMismatchError: no ``v1`` signature matches (forged, another secret, or the
            body, id or timestamp changed).
    """
    # (1) The three headers are there, once each.
    msg_id = _header(headers, ID_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    listed = _header(headers, SIGNATURE_HEADER)
    # (2) The id and timestamp are well formed (no "." to make the signed text ambiguous).
    _check_id(msg_id)
    if not _DIGITS.fullmatch(stamp):
        raise WebhookHeaderError(
            f"{TIMESTAMP_HEADER} must be integer epoch seconds, got {stamp[:20]!r}"
        )
    timestamp = int(stamp)
    # (3) The signature list parses: "<version>,<base64>" entries, at least one v1.
    entries = listed.split()
    if len(entries) > MAX_SIGNATURES:
        raise WebhookHeaderError(f"{SIGNATURE_HEADER} lists more than {MAX_SIGNATURES} entries")
    candidates: list[bytes] = []
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not comma or not version or not value:
            raise WebhookHeaderError(
                f"{SIGNATURE_HEADER} entries are <version>,<base64>, got {entry[:20]!r}"
            )
        if version != VERSION:
            continue  # another scheme (v1a: Ed25519); not ours to check
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise WebhookHeaderError(f"a {VERSION} signature is not base64") from None
    if not candidates:
        raise WebhookHeaderError(f"{SIGNATURE_HEADER} carries no {VERSION} signature")
    # (4) The timestamp is within the tolerance, either way.
    if timestamp < now - tolerance:
        raise WebhookTimestampError(
            f"{TIMESTAMP_HEADER} {timestamp} is {now - timestamp:.0f} s old "
            f"(more than {tolerance:g} s): too old"
        )
    if timestamp > now + tolerance:
        raise WebhookTimestampError(
            f"{TIMESTAMP_HEADER} {timestamp} is {timestamp - now:.0f} s ahead "
            f"(more than {tolerance:g} s): too new"
        )
    # (5) One v1 signature matches, compared in constant time.
    expected = _digest(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise WebhookMismatchError("no v1 signature matches this body, id and timestamp")
