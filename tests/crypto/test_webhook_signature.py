"""Standard Webhooks signatures: a published known answer, round trips, an HMAC recomputed
with the standard library alone, and every way verification must fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest

from homewarden.crypto.webhook_signature import (
    TOLERANCE,
    format_secret,
    parse_secret,
    sign,
    signed_headers,
    verify,
)
from homewarden.errors import (
    InvalidRequestError,
    InvalidSignatureError,
    WebhookHeaderError,
    WebhookMismatchError,
    WebhookSignatureError,
    WebhookTimestampError,
)

NOW = 1_764_403_200
BODY = b'{"type":"event.created","data":{"camera":"porch","event_id":7}}'
MSG = "msg_event_7"


def test_known_answer_of_the_reference_library() -> None:
    # The sign test of the specification's reference Python library
    # (standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py).
    secret = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    # The same secret without its prefix, as the reference libraries accept it.
    assert parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == secret


def test_round_trip_and_an_independent_hmac() -> None:
    raw = os.urandom(32)
    text = format_secret(raw)
    assert text.startswith("whsec_")
    assert parse_secret(text) == raw
    headers = signed_headers(parse_secret(text), MSG, NOW, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    verify(parse_secret(text), headers, BODY, now=NOW)
    # Recomputed with hmac/hashlib only, from the specification's text.
    mac = hmac.new(raw, f"{MSG}.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    # Header names are case-insensitive (RFC 9110 5.1).
    verify(raw, {k.upper(): v for k, v in headers.items()}, BODY, now=NOW)  # type: ignore[arg-type]


def test_timestamp_tolerance_is_five_minutes_either_way() -> None:
    secret = parse_secret(format_secret(os.urandom(32)))
    headers = signed_headers(secret, MSG, NOW, BODY)
    verify(secret, headers, BODY, now=NOW + TOLERANCE)  # at the edge: still good
    verify(secret, headers, BODY, now=NOW - TOLERANCE)
    with pytest.raises(WebhookTimestampError, match="too old"):
        verify(secret, headers, BODY, now=NOW + TOLERANCE + 1)
    with pytest.raises(WebhookTimestampError, match="too new"):
        verify(secret, headers, BODY, now=NOW - TOLERANCE - 1)
    # A replay with a fresh timestamp but the old signature is a forgery.
    replay = {**headers, "webhook-timestamp": str(NOW + 3600)}
    with pytest.raises(WebhookMismatchError):
        verify(secret, replay, BODY, now=NOW + 3600)


def test_forgeries_fail_with_a_mismatch() -> None:
    secret = parse_secret(format_secret(os.urandom(32)))
    other = parse_secret(format_secret(os.urandom(32)))
    headers = signed_headers(secret, MSG, NOW, BODY)
    with pytest.raises(WebhookMismatchError):
        verify(other, headers, BODY, now=NOW)  # another secret
    with pytest.raises(WebhookMismatchError):
        verify(secret, headers, BODY.replace(b"porch", b"gate!"), now=NOW)  # body changed
    with pytest.raises(WebhookMismatchError):
        verify(secret, headers, BODY + b" ", now=NOW)  # one space more
    with pytest.raises(WebhookMismatchError):
        verify(secret, {**headers, "webhook-id": "msg_event_8"}, BODY, now=NOW)
    raw = bytearray(base64.b64decode(headers["webhook-signature"][3:]))
    raw[0] ^= 1
    flipped = {**headers, "webhook-signature": "v1," + base64.b64encode(bytes(raw)).decode()}
    with pytest.raises(WebhookMismatchError):
        verify(secret, flipped, BODY, now=NOW)
    # Every failure is an InvalidSignatureError (the verifier raises, never returns False).
    assert issubclass(WebhookMismatchError, WebhookSignatureError)
    assert issubclass(WebhookSignatureError, InvalidSignatureError)


def test_rotation_sends_two_signatures_and_either_secret_verifies() -> None:
    old = parse_secret(format_secret(os.urandom(32)))
    new = parse_secret(format_secret(os.urandom(32)))
    headers = signed_headers((new, old), MSG, NOW, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(old, headers, BODY, now=NOW)
    verify(new, headers, BODY, now=NOW)
    # An unknown scheme's entry (v1a: Ed25519) is skipped, not an error.
    mixed = {**headers, "webhook-signature": "v1a,AAAA " + headers["webhook-signature"]}
    verify(new, mixed, BODY, now=NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": None}, "webhook-id header is missing"),
        ({"webhook-timestamp": None}, "webhook-timestamp header is missing"),
        ({"webhook-signature": None}, "webhook-signature header is missing"),
        ({"webhook-signature": "  "}, "webhook-signature header is missing"),
        ({"webhook-timestamp": "1764403200.5"}, "integer epoch seconds"),
        ({"webhook-timestamp": "-5"}, "integer epoch seconds"),
        ({"webhook-timestamp": "soon"}, "integer epoch seconds"),
        ({"webhook-id": "msg.1"}, "without '.'"),
        ({"webhook-signature": "v1"}, "<version>,<base64>"),
        ({"webhook-signature": "v1,"}, "<version>,<base64>"),
        ({"webhook-signature": "v1,AAAA base64!"}, "<version>,<base64>"),
        ({"webhook-signature": "v1,@@@@"}, "not base64"),
        ({"webhook-signature": "v1a,AAAA"}, "no v1 signature"),
    ],
)
def test_malformed_headers(change: dict[str, str | None], reason: str) -> None:
    secret = parse_secret(format_secret(os.urandom(32)))
    headers: dict[str, str] = signed_headers(secret, MSG, NOW, BODY)
    for key, value in change.items():
        if value is None:
            del headers[key]
        else:
            headers[key] = value
    with pytest.raises(WebhookHeaderError, match=reason):
        verify(secret, headers, BODY, now=NOW)


def test_a_header_given_twice_is_malformed() -> None:
    secret = parse_secret(format_secret(os.urandom(32)))
    headers = signed_headers(secret, MSG, NOW, BODY)
    doubled = {**headers, "Webhook-Timestamp": str(NOW)}
    with pytest.raises(WebhookHeaderError, match="more than once"):
        verify(secret, doubled, BODY, now=NOW)


def test_sign_refuses_ids_that_would_make_the_signed_text_ambiguous() -> None:
    secret = parse_secret(format_secret(os.urandom(32)))
    for bad in ("", "a.b", "a b", "a,b", "é", "x" * 257):
        with pytest.raises(WebhookHeaderError):
            sign(secret, bad, NOW, BODY)
    with pytest.raises(WebhookHeaderError):
        sign(secret, MSG, -1, BODY)


@pytest.mark.parametrize(
    "text", ["whsec_", "whsec_AAAA", "whsec_!!!!", format_secret(b"k" * 24)[:-8]]
)
def test_bad_secrets(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="webhook secret"):
        parse_secret(text)
    with pytest.raises(InvalidRequestError):
        format_secret(b"short")
    with pytest.raises(InvalidRequestError):
        format_secret(b"x" * 65)
