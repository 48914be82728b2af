"""A Web Push service on loopback, for tests: it takes pywebpush's POSTs as a browser vendor's
push service does, checks the VAPID authorization (RFC 8292) and decrypts the payload with the
subscription's private key and auth secret (RFC 8291, aes128gcm of RFC 8188).

Each subscription is a path ``/push/<name>`` with its own P-256 key pair and 16-byte auth
secret, made by :meth:`PushEndpoint.new_subscription`. A path can be told to answer with
another status (``410`` for a subscription that is gone). Requests whose VAPID JWT does not
verify are answered 401 and recorded with ``vapid_error``, as a real push service refuses
them.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Received:
    """One POST as the push service saw it."""

    name: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int
    vapid_claims: dict[str, Any] | None
    vapid_key: str | None
    vapid_error: str | None
    payload: dict[str, Any] | None


@dataclass
class Subscription:
    """A browser's subscription: what it sends the server, and its secrets."""

    name: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def to_json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()`` as a browser sends it."""
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


def verify_vapid(header: str, origin: str) -> tuple[dict[str, Any], str]:
    """Check an ``Authorization: vapid t=<JWT>,k=<key>`` header (RFC 8292 section 3): an
    ES256 JWT signed by ``k`` whose ``aud`` is ``origin``, with ``exp`` in the next 24 h and
    a ``sub`` contact. Returns (claims, k).

    Raises:
        ValueError: any check fails (the message says which).
    """
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError(f"scheme {scheme!r} is not vapid")
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    token, key = parts["t"], parts["k"]
    head_b64, claims_b64, sig_b64 = token.split(".")
    head = json.loads(unb64url(head_b64))
    if head.get("alg") != "ES256":
        raise ValueError(f"alg {head.get('alg')!r} is not ES256")
    sig = unb64url(sig_b64)
    if len(sig) != 64:
        raise ValueError("an ES256 signature is 64 bytes (r || s)")
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise ValueError("the JWT signature does not verify") from exc
    claims = json.loads(unb64url(claims_b64))
    if claims.get("aud") != origin:
        raise ValueError(f"aud {claims.get('aud')!r} is not {origin!r}")
    now = time.time()
    if not now < float(claims["exp"]) <= now + 86400:
        raise ValueError(f"exp {claims['exp']} is not within 24 h")
    sub = str(claims.get("sub", ""))
    if not sub.startswith(("mailto:", "https://")):
        raise ValueError(f"sub {sub!r} is not a contact")
    return claims, key


class PushEndpoint:
    """The push service (see the module docstring). Use :func:`push_endpoint`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: dict[str, int] = {}
        self._subs: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = endpoint.handle(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def new_subscription(self, name: str) -> Subscription:
        """A new browser subscription at ``/push/<name>``."""
        sub = Subscription(
            name,
            f"{self.origin}/push/{name}",
            ec.generate_private_key(ec.SECP256R1()),
            os.urandom(16),
        )
        self._subs[name] = sub
        return sub

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        name = path.removeprefix("/push/")
        sub = self._subs.get(name)
        claims = key = error = payload = None
        status = 404 if sub is None else self.statuses.get(name, 201)
        try:
            claims, key = verify_vapid(headers.get("authorization", ""), self.origin)
        except (ValueError, KeyError) as exc:
            error = str(exc) or type(exc).__name__
            status = 401
        if sub is not None and status == 201:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
            payload = json.loads(plain)
        with self._arrived:
            self.received.append(Received(name, headers, body, status, claims, key, error, payload))
            self._arrived.notify_all()
        return status

    def to(self, name: str) -> list[Received]:
        """What arrived for subscription ``name``."""
        with self._lock:
            return [r for r in self.received if r.name == name]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` requests have arrived (or ``timeout``); return them all."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            return list(self.received)


@contextmanager
def push_endpoint() -> Iterator[PushEndpoint]:
    """A running loopback push service, shut down afterwards."""
    endpoint = PushEndpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()
