"""Mail fixtures: a real SMTP server (aiosmtpd) on loopback that keeps what it receives.

``smtp_server`` is a plain SMTP server (RFC 5321) on ``127.0.0.1`` at a free port, for one test.
``smtp_server_factory`` starts more, or differently configured ones: STARTTLS (RFC 3207) with a
certificate from ``smtp_tls`` (a throw-away CA made once per session; point the client at
``smtp_tls.ca_file`` through ``SSL_CERT_FILE`` to trust it), and/or AUTH with one user name and
password. Any server answers ``550`` to the addresses in its ``reject`` set (at RCPT).
Every server is stopped when its test ends.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homewarden.config import MailSettings

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted (DATA answered 250)."""

    mail_from: str  # envelope sender (MAIL FROM)
    rcpt_tos: tuple[str, ...]  # envelope recipients the server accepted (RCPT TO)
    message: EmailMessage  # parsed with email.policy.default: headers decoded (RFC 2047)
    body: str  # decoded text/plain body, line ends normalised to "\n"
    login: str | None  # the AUTH identity the client signed in as, if it did
    tls: bool  # True when the session was upgraded with STARTTLS


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate for ``127.0.0.1`` and ``localhost``."""

    ca_file: Path  # PEM certificate of the CA, to trust on the client side
    cert_file: Path  # PEM server certificate (chain: leaf only; the CA signs it)
    key_file: Path  # PEM server private key (unencrypted)

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context presenting the certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (bind to port 0, read it, close). Another process
    may take it before it is used; good enough on a test machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class _Handler:
    """aiosmtpd handler hooks: rejects listed recipients, records what arrives."""

    def __init__(self, server: SmtpTestServer) -> None:
        self._server = server

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self._server.mail_commands.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() in {a.lower() for a in self._server.reject}:
            return f"550 5.1.1 <{address}>: recipient rejected by the test server"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if isinstance(part, EmailMessage) else ""
        auth = session.auth_data if session.authenticated else None
        self._server._received(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                message=message,
                body=str(text).replace("\r\n", "\n"),
                login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                tls=session.ssl is not None,
            )
        )
        return "250 OK: queued"


@dataclass
class SmtpTestServer:
    """A running aiosmtpd server on loopback; see the module docstring."""

    host: str
    port: int
    #: Recipients answered 550 at RCPT (compared case-insensitively); may be changed live.
    reject: set[str] = field(default_factory=set)
    #: Accepted messages, in arrival order.
    messages: list[ReceivedMail] = field(default_factory=list)
    #: The sender of every MAIL command, accepted or not: a send that reached the server.
    mail_commands: list[str] = field(default_factory=list)
    starttls: bool = False
    credentials: tuple[str, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _received(self, mail: ReceivedMail) -> None:
        with self._lock:
            self.messages.append(mail)

    def settings(self, **overrides: Any) -> MailSettings:
        """:class:`MailSettings` pointing at this server (STARTTLS and credentials as the
        server wants them); ``overrides`` replace any field."""
        values: dict[str, Any] = {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "mail_from": "homewarden@example.org",
            "starttls": self.starttls,
        }
        if self.credentials is not None:
            values["username"], values["password"] = self.credentials
        values.update(overrides)
        return MailSettings(**values)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Poll until at least ``count`` messages arrived (within ``timeout`` seconds) and
        return them all; raise AssertionError naming what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = list(self.messages)
            if len(got) >= count:
                return got
            if time.monotonic() >= deadline:
                arrived = [(m.mail_from, m.rcpt_tos, m.message["Subject"]) for m in got]
                raise AssertionError(
                    f"expected {count} message(s) at {self.host}:{self.port} within "
                    f"{timeout} s, got {len(got)}: {arrived}; MAIL commands: {self.mail_commands}"
                )
            time.sleep(0.02)


SmtpServerFactory = Callable[..., SmtpTestServer]


def _make_tls_files(directory: Path) -> TlsFiles:
    """A CA (P-256) and a server certificate it signs, valid for a day either side of now."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HomeWarden test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture(scope="session")
def smtp_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA and server certificate (``127.0.0.1``, ``localhost``), made once."""
    return _make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server_factory(smtp_tls: TlsFiles) -> Iterator[SmtpServerFactory]:
    """Starts SMTP servers on loopback: ``factory(starttls=False, credentials=None,
    reject=())``. With ``starttls`` the server offers STARTTLS with the ``smtp_tls``
    certificate and requires it before anything else; with ``credentials`` (user, password)
    it requires AUTH (PLAIN or LOGIN; over STARTTLS when that is on, else in the clear, which
    only a loopback test may do) and refuses MAIL without it. All are stopped afterwards."""
    controllers: list[Controller] = []

    def start(
        *,
        starttls: bool = False,
        credentials: tuple[str, str] | None = None,
        reject: tuple[str, ...] | set[str] = (),
    ) -> SmtpTestServer:
        server = SmtpTestServer(
            host=LOOPBACK,
            port=free_port(),
            reject=set(reject),
            starttls=starttls,
            credentials=credentials,
        )
        kwargs: dict[str, Any] = {}
        if starttls:
            kwargs.update(tls_context=smtp_tls.server_context(), require_starttls=True)
        if credentials is not None:
            user, password = credentials

            def authenticator(
                _server: SMTP, _session: Session, _envelope: Envelope, _mech: str, data: Any
            ) -> AuthResult:
                ok = isinstance(data, LoginPassword) and (
                    data.login == user.encode() and data.password == password.encode()
                )
                # handled=False: aiosmtpd then answers a refusal with 535 itself (with the
                # default, handled=True, it answers nothing and the client times out).
                return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

            # aiosmtpd warns when AUTH is required without TLS, so in the clear it is only
            # offered; the handler then records who (if anyone) signed in.
            kwargs.update(
                authenticator=authenticator, auth_require_tls=starttls, auth_required=starttls
            )
        controller = Controller(_Handler(server), hostname=server.host, port=server.port, **kwargs)
        controller.start()
        controllers.append(controller)
        return server

    try:
        yield start
    finally:
        for controller in controllers:
            controller.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: SmtpServerFactory) -> SmtpTestServer:
    """A plain SMTP server on ``127.0.0.1`` at a free port, for this test (see the module)."""
    return smtp_server_factory()
