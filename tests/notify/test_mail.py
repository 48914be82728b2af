"""The mail adapter against a real SMTP server (aiosmtpd) on loopback: no mocks."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from homewarden.config import MailSettings
from homewarden.errors import ConfigError, InvalidRequestError, NoticeDeliveryError
from homewarden.notify.mail import Mailer, check_address
from tests.fixtures_mail import LOOPBACK, SmtpServerFactory, SmtpTestServer, TlsFiles, free_port

USER = "warden-user"
# Every character that means something in a URL.
PASSWORD = "p@ss/w:rd?x=1&y#z%41 +;"


def _sent_ok(server: SmtpTestServer, to: str = "check@example.net") -> None:
    """Send one more mail and see that it is the only one: proves an earlier refused send
    sent nothing, not just that it had not arrived yet."""
    Mailer(server.settings()).send(to, "control", "control body")
    got = server.wait_for(1)
    assert [m.rcpt_tos for m in got] == [(to,)]


def test_mail_arrives_with_sender_recipient_subject_and_body(smtp_server: SmtpTestServer) -> None:
    mailer = Mailer(smtp_server.settings(mail_from="notices@homewarden.example"))
    assert mailer.enabled
    subject = "Grüße — café: a request for your footage"
    body = "Grüße — café\n\nA request arrived.\n  Indented line, 100 % kept.\n"

    mailer.send("owner.name+home@example.com", subject, body)

    (mail,) = smtp_server.wait_for(1)
    assert mail.mail_from == "notices@homewarden.example"
    assert mail.rcpt_tos == ("owner.name+home@example.com",)
    assert mail.message["To"] == "owner.name+home@example.com"
    assert mail.message["From"].addresses[0].addr_spec == "notices@homewarden.example"
    assert mail.message["From"].addresses[0].display_name == "HomeWarden"
    assert mail.message["Subject"] == subject
    assert mail.message.get_content_type() == "text/plain"
    # apprise drops trailing whitespace only.
    assert mail.body.rstrip("\n") == body.rstrip()
    assert mail.login is None
    assert not mail.tls


def test_server_down_raises_naming_host_and_port_quickly() -> None:
    port = free_port()  # nothing listens there
    mailer = Mailer(MailSettings(smtp_host=LOOPBACK, smtp_port=port))
    start = time.monotonic()
    with pytest.raises(NoticeDeliveryError, match=rf"127\.0\.0\.1:{port}\b") as err:
        mailer.send("owner@example.com", "subject", "body")
    assert time.monotonic() - start < 5.0
    assert "refused" in str(err.value).lower()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections (kernel backlog) but never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_silent_server_is_bounded_by_the_socket_timeout(silent_listener: int) -> None:
    mailer = Mailer(
        MailSettings(smtp_host=LOOPBACK, smtp_port=silent_listener),
        socket_timeout=0.5,
        send_timeout=20.0,
    )
    start = time.monotonic()
    with pytest.raises(NoticeDeliveryError, match=rf"127\.0\.0\.1:{silent_listener}\b") as err:
        mailer.send("owner@example.com", "subject", "body")
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 5.0, elapsed
    assert "timed out" in str(err.value)


def test_silent_server_is_bounded_by_the_send_timeout(silent_listener: int) -> None:
    mailer = Mailer(
        MailSettings(smtp_host=LOOPBACK, smtp_port=silent_listener),
        socket_timeout=3.0,
        send_timeout=0.5,
    )
    start = time.monotonic()
    with pytest.raises(NoticeDeliveryError, match=r"did not finish within 0\.5 s") as err:
        mailer.send("owner@example.com", "subject", "body")
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 2.5, elapsed
    assert f"127.0.0.1:{silent_listener}" in str(err.value)


def test_recipient_refused_by_the_server(smtp_server: SmtpTestServer) -> None:
    smtp_server.reject.add("gone@example.com")
    mailer = Mailer(smtp_server.settings())
    with pytest.raises(NoticeDeliveryError, match="550") as err:
        mailer.send("gone@example.com", "subject", "body")
    message = str(err.value)
    assert f"{smtp_server.host}:{smtp_server.port}" in message
    # The address is personal data: the error (which gets logged) does not carry it.
    assert "gone@example.com" not in message
    assert smtp_server.mail_commands == ["homewarden@example.org"]  # it did reach the server
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("owner.example.com", "no '@'"),
        ("owner@home@example.com", "2 '@'"),
        ("a@b.example\nBcc: x@y.example", "control character"),
        ("a@b.example\r\nBcc: x@y.example", "control character"),
        ("a@b.example,x@y.example", "comma"),
        ("a@b.example, x@y.example", "whitespace"),
        ("Owner <a@b.example>", "whitespace"),
        ("<a@b.example>", "before '@'"),
        ("a@b.example>", "domain"),
        (".a@b.example", "before '@'"),
        ("a..b@b.example", "before '@'"),
        ("a@-b.example", "domain"),
        ("a@[127.0.0.1]", "domain"),
        ("@b.example", "before '@'"),
        ("a@", "domain"),
        ("", "no '@'"),
        ("é@b.example", "before '@'"),
        ("x" * 65 + "@b.example", "local part longer than 64"),
        ("a@" + ".".join(["b" * 60] * 5), "at most 254"),
    ],
)
def test_malformed_recipient_is_refused_and_nothing_is_sent(
    smtp_server: SmtpTestServer, address: str, reason: str
) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        Mailer(smtp_server.settings()).send(address, "subject", "body")
    assert smtp_server.mail_commands == []
    _sent_ok(smtp_server)


def test_address_rule_accepts_ordinary_addresses() -> None:
    for address in ("a@b", "o.brien+tag@mail.example.co.uk", "x_y-z@localhost", "1@2.3"):
        assert check_address(address) == address
    longest = "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 60
    assert len(longest) == 254
    assert check_address(longest) == longest


def test_address_apprise_would_misread_is_refused(smtp_server: SmtpTestServer) -> None:
    # Valid by RFC 5322, but apprise's parser reads "o" as a display name and would mail
    # brien@example.com instead: refused, and nothing goes to anyone.
    with pytest.raises(InvalidRequestError, match="apprise"):
        Mailer(smtp_server.settings()).send("o'brien@example.com", "subject", "body")
    assert smtp_server.mail_commands == []
    _sent_ok(smtp_server)


@pytest.mark.parametrize("subject", ["two\nlines", "carriage\rreturn", "nul\x00", "tab\tbed"])
def test_subject_with_control_characters_is_refused(
    smtp_server: SmtpTestServer, subject: str
) -> None:
    with pytest.raises(InvalidRequestError, match="subject"):
        Mailer(smtp_server.settings()).send("owner@example.com", subject, "body")
    assert smtp_server.mail_commands == []


@pytest.mark.parametrize("body", ["", "  \n\t\n"])
def test_empty_body_is_refused(smtp_server: SmtpTestServer, body: str) -> None:
    with pytest.raises(InvalidRequestError, match="body"):
        Mailer(smtp_server.settings()).send("owner@example.com", "subject", body)
    assert smtp_server.mail_commands == []


def test_not_configured_raises() -> None:
    mailer = Mailer(MailSettings())
    assert not mailer.enabled
    with pytest.raises(NoticeDeliveryError, match="mail is not configured"):
        mailer.send("owner@example.com", "subject", "body")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"mail_from": "not an address"}, "mail.mail_from"),
        ({"mail_from": "a@b,c@d"}, "mail.mail_from"),
        ({"smtp_host": " "}, "mail.smtp_host"),
        ({"username": "u"}, "together"),
        ({"password": "p"}, "together"),
        ({"smtp_host": "localhost", "username": "u", "password": "pässwort"}, "ASCII"),
        ({"smtp_host": "localhost", "username": "u", "password": ""}, "ASCII"),
        ({"smtp_host": "localhost", "username": "u\n", "password": "p"}, "ASCII"),
        # Credentials to a remote server in the clear: refused before any connection.
        ({"smtp_host": "192.0.2.1", "username": "u", "password": "p"}, "starttls"),
        ({"smtp_host": "mail.example.net", "username": "u", "password": "p"}, "starttls"),
    ],
)
def test_unworkable_settings_are_config_errors(overrides: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"smtp_host": "mail.example.net", "smtp_port": 587}
    values.update(overrides)
    with pytest.raises(ConfigError, match=match):
        Mailer(MailSettings(**values))


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_timeouts_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ConfigError):
        Mailer(MailSettings(), socket_timeout=bad)
    with pytest.raises(ConfigError):
        Mailer(MailSettings(), send_timeout=bad)


def test_credentials_reach_the_server_intact_in_the_clear_on_loopback(
    smtp_server_factory: SmtpServerFactory,
) -> None:
    server = smtp_server_factory(credentials=(USER, PASSWORD))
    Mailer(server.settings()).send("owner@example.com", "subject", "body")
    (mail,) = server.wait_for(1)
    assert mail.login == USER  # the password, with all its URL characters, matched


def test_starttls_with_credentials(
    smtp_server_factory: SmtpServerFactory, smtp_tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls.ca_file))
    server = smtp_server_factory(starttls=True, credentials=(USER, PASSWORD))
    Mailer(server.settings()).send("owner@example.com", "Grüße", "über TLS")
    (mail,) = server.wait_for(1)
    assert mail.tls
    assert mail.login == USER
    assert mail.body.rstrip("\n") == "über TLS"


def test_starttls_refuses_a_certificate_it_cannot_verify(
    smtp_server_factory: SmtpServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system trust store does not know the test CA.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = smtp_server_factory(starttls=True)
    with pytest.raises(NoticeDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        Mailer(server.settings()).send("owner@example.com", "subject", "body")
    assert server.mail_commands == []


def test_server_demanding_starttls_refuses_plain_smtp(
    smtp_server_factory: SmtpServerFactory,
) -> None:
    server = smtp_server_factory(starttls=True)
    with pytest.raises(NoticeDeliveryError, match="530"):
        Mailer(server.settings(starttls=False)).send("owner@example.com", "subject", "body")
    assert server.messages == []


def _secret_forms() -> list[str]:
    return [USER, PASSWORD, quote(PASSWORD, safe=""), quote(USER, safe=""), quote(PASSWORD)]


def _failing_and_working_sends(
    smtp_server_factory: SmtpServerFactory, smtp_server: SmtpTestServer
) -> list[str]:
    """With credentials: a server without AUTH, a wrong password, a server down, then a
    success; returns the text of the three errors."""
    errors: list[str] = []
    for settings in (
        smtp_server.settings(username=USER, password=PASSWORD),
        smtp_server_factory(credentials=(USER, "other")).settings(username=USER, password=PASSWORD),
        MailSettings(smtp_host=LOOPBACK, smtp_port=free_port(), username=USER, password=PASSWORD),
    ):
        with pytest.raises(NoticeDeliveryError) as err:
            Mailer(settings).send("owner@example.com", "subject", "body")
        errors += [str(err.value), repr(err.value)]
    good = smtp_server_factory(credentials=(USER, PASSWORD))
    Mailer(good.settings()).send("owner@example.com", "subject", "body")
    assert good.wait_for(1)[0].login == USER
    return errors


def test_credentials_never_reach_logs_or_errors(
    smtp_server_factory: SmtpServerFactory,
    smtp_server: SmtpTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # pytest attaches caplog's handler to non-propagating loggers too, so caplog sees every
    # record apprise makes (at DEBUG and above: the level this adapter sets).
    caplog.set_level(1)
    errors = _failing_and_working_sends(smtp_server_factory, smtp_server)

    assert any("AUTH" in e for e in errors), errors
    assert any("535" in e for e in errors), errors
    assert any("refused" in e for e in errors), errors
    logged = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text}" for r in caplog.records)
    # Not vacuous: apprise did log, and the record that names the URL's user was redacted.
    assert any(r.name == "apprise" for r in caplog.records)
    assert "Socket Exception" in logged
    assert "Loaded E-Mail URL: mailto://****:****@" in logged
    for secret in _secret_forms():
        assert secret not in logged
        for e in errors:
            assert secret not in e, e


def test_apprise_records_do_not_reach_the_applications_handlers(
    smtp_server_factory: SmtpServerFactory, smtp_server: SmtpTestServer
) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    keep, level = Keep(level=1), root.level
    root.addHandler(keep)
    root.setLevel(1)
    try:
        _failing_and_working_sends(smtp_server_factory, smtp_server)
    finally:
        root.removeHandler(keep)
        root.setLevel(level)
    assert not [r.getMessage() for r in seen if r.name.split(".")[0] == "apprise"]
    assert seen  # the root handler did work: aiosmtpd's "mail.log" records reached it
