"""Outgoing mail: owner notices, requesters' address checks and staff alerts, sent as one
plain-text message per recipient through apprise's e-mail plugin to one SMTP server.

The SMTP server, port, sender and credentials come from :class:`~homewarden.config.MailSettings`
and are turned into one apprise ``mailto://`` (plain SMTP, RFC 5321) or ``mailtos://`` with
``mode=starttls`` (RFC 3207 STARTTLS before anything else is said, credentials included) URL
per message. Implicit TLS (port 465) is not offered by the settings. Server certificates are
verified against the system's trust store (``verify=yes``).

Bounds. Every blocking socket operation of a send (TCP connect, the TLS handshake, each SMTP
reply) waits at most ``socket_timeout`` seconds (apprise's ``cto``, which it passes to
:class:`smtplib.SMTP` as the socket timeout), and :meth:`Mailer.send` as a whole returns or
raises after at most ``send_timeout`` seconds (apprise's ``notify(timeout=...)``) plus
apprise's 0.1 s grace. When the second bound hits, apprise stops waiting but cannot stop its
worker thread; that thread still ends within ``socket_timeout`` of its current operation, and
the mail may or may not have been accepted: the error says so.

Logging. apprise logs through :mod:`logging` under the ``apprise`` logger; at TRACE it dumps
parsed URLs with the password, at DEBUG it names the SMTP user. Importing this module contains
that logger: ``propagate`` off (its records reach only handlers attached to it: apprise's own
per-call capture, a :class:`logging.NullHandler` against Python's last-resort handler), level
DEBUG (no TRACE records are made; the capture sees socket errors), and a filter that rewrites
each record so no SMTP user name or password a :class:`Mailer` was given, nor its URL-encoded
form, is in it, whatever handler is attached. What a failed send logged is carried in the
raised :class:`~homewarden.errors.NoticeDeliveryError` instead, with the recipient's address
replaced too.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import threading
import unicodedata
from urllib.parse import quote, quote_plus

from apprise import Apprise, AppriseAsset, AppriseResult, AppriseResultStatus, NotifyFormat

from homewarden.config import MailSettings
from homewarden.errors import ConfigError, InvalidRequestError, NoticeDeliveryError

#: Default bound of each blocking socket operation of a send (seconds).
SOCKET_TIMEOUT = 10.0
#: Default bound of one :meth:`Mailer.send` as a whole (seconds).
SEND_TIMEOUT = 30.0

#: Longest address: RFC 5321 4.5.3.1.3 caps a path at 256 octets including its ``<`` ``>``.
MAX_ADDRESS_LENGTH = 254
#: Longest local part (RFC 5321 4.5.3.1.1).
MAX_LOCAL_PART_LENGTH = 64

# RFC 5322 3.2.3 atext, in dot-atom form (3.4.1 addr-spec without quoted local parts).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
# RFC 5321 4.1.2 Domain: dot-separated LDH labels (RFC 1035 2.3.1), each at most 63 octets.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

#: Display name of the sender (``From: HomeWarden <mail_from>``) and apprise's X-Application.
SENDER_NAME = "HomeWarden"

_APPRISE_LOGGER = "apprise"
_REASON_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})
#: Secrets at least this long are redacted wherever they occur; shorter ones only as a whole
#: token, or they would mangle ordinary words (a user name "u").
_MIN_FREE_SECRET = 4


def _secret_forms(secret: str) -> set[str]:
    """``secret`` as it may appear in a message: as is, and percent-encoded as in a URL."""
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


def _redact(text: str, secrets: frozenset[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_FREE_SECRET:
            text = text.replace(secret, "****")
        elif secret in text:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "****", text)
    return text


class _RedactSecrets(logging.Filter):
    """Rewrites every record of the apprise logger so no registered SMTP user name or
    password (nor its URL-encoded form) is in it, whatever handler gets it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()

    def register(self, *secrets: str | None) -> None:
        forms = {f for s in secrets if s for f in _secret_forms(s)}
        with self._lock:
            self._secrets = self._secrets | forms

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: keep only its template
            message, record.args = str(record.msg), ()
        redacted = _redact(message, secrets)
        if redacted != message or record.args:
            record.msg, record.args = redacted, ()
        if record.exc_info or record.exc_text:
            # A traceback's text is not redacted: drop it (its message already is in msg).
            record.exc_info, record.exc_text = None, None
        return True


_REDACT = _RedactSecrets()


def _contain_apprise_logging() -> None:
    """Keep apprise's log records out of the application's handlers and free of secrets
    (see the module docstring)."""
    apprise_log = logging.getLogger(_APPRISE_LOGGER)
    apprise_log.propagate = False
    # DEBUG, not TRACE: TRACE records dump the parsed URL; DEBUG ones hold socket errors.
    apprise_log.setLevel(logging.DEBUG)
    if _REDACT not in apprise_log.filters:
        apprise_log.addFilter(_REDACT)
    if not any(isinstance(h, logging.NullHandler) for h in apprise_log.handlers):
        apprise_log.addHandler(logging.NullHandler())


_contain_apprise_logging()


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def check_address(address: str, *, what: str = "recipient address") -> str:
    """Return ``address`` if it is one plain mail address, else raise.

    The rule (simple on purpose, and stricter than RFC 5322 so no address is read two ways):
    exactly one ``@``; no whitespace, control character (so no header injection) or comma
    (so no list); at most 254 characters in all (RFC 5321 4.5.3.1.3) and 64 before the ``@``
    (RFC 5321 4.5.3.1.1); the local part a dot-atom of RFC 5322 3.2.3 atext (no quoted
    strings, no comments, no display name); the domain dot-separated letter-digit-hyphen
    labels of at most 63 characters (RFC 5321 4.1.2; no address literals). ASCII only:
    internationalised addresses (SMTPUTF8, RFC 6531) are not supported; write the domain in
    its ``xn--`` form.

    Raises:
        InvalidRequestError: ``address`` breaks the rule; the message says which part, with
            ``what`` naming the address.
    """
    if not isinstance(address, str):
        raise InvalidRequestError(f"{what} must be a string, not {type(address).__name__}")
    if _has_control(address) or any(c.isspace() for c in address):
        raise InvalidRequestError(f"{what} {address!r} holds whitespace or a control character")
    if "," in address:
        raise InvalidRequestError(f"{what} {address!r} holds a comma: one address only")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidRequestError(
            f"{what} is {len(address)} characters long; at most {MAX_ADDRESS_LENGTH} "
            "(RFC 5321 4.5.3.1.3)"
        )
    ats = address.count("@")
    if ats != 1:
        raise InvalidRequestError(
            f"{what} {address!r} has {'no' if ats == 0 else ats} '@'; it needs exactly one"
        )
    local, domain = address.split("@")
    if len(local) > MAX_LOCAL_PART_LENGTH:
        raise InvalidRequestError(
            f"{what} {address!r} has a local part longer than {MAX_LOCAL_PART_LENGTH} "
            "characters (RFC 5321 4.5.3.1.1)"
        )
    if not _LOCAL_PART.fullmatch(local):
        raise InvalidRequestError(
            f"{what} {address!r}: the part before '@' must be letters, digits, dots (not "
            "first, last or doubled) and !#$%&'*+/=?^_`{|}~-"
        )
    if not _DOMAIN.fullmatch(domain):
        raise InvalidRequestError(
            f"{what} {address!r}: the domain must be dot-separated labels of letters, "
            "digits and inner hyphens"
        )
    return address


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_timeout(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number of seconds above 0, not {value!r}")
    return float(value)


class Mailer:
    """Sends plain-text mail through apprise to the SMTP server of ``settings``.

    ``socket_timeout`` bounds each blocking socket operation and ``send_timeout`` one
    :meth:`send` as a whole (seconds; see the module docstring). :meth:`send` blocks: call it
    from a worker thread, not from an event loop. Instances are safe to share between
    threads: each send builds its own apprise objects.

    Raises:
        ConfigError: the settings cannot work: ``mail_from`` is not a plain address, the
            host is blank, only one of user name and password is set, either is empty or holds
            a character outside printable ASCII (smtplib's limit), a user name and
            password would cross the network unencrypted (set ``starttls``; plain SMTP
            credentials are accepted only for a loopback server), or a timeout is not a
            positive finite number.
    """

    def __init__(
        self,
        settings: MailSettings,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self._settings = settings
        self._socket_timeout = _check_timeout(socket_timeout, "socket_timeout")
        self._send_timeout = _check_timeout(send_timeout, "send_timeout")
        try:
            check_address(settings.mail_from, what="mail.mail_from")
        except InvalidRequestError as e:
            raise ConfigError(str(e)) from None
        host = settings.smtp_host
        if host is not None and (not host.strip() or _has_control(host) or " " in host):
            raise ConfigError(f"mail.smtp_host {host!r} is not a host name or address")
        if (settings.username is None) != (settings.password is None):
            raise ConfigError("mail.username and mail.password must be set together")
        for name, value in (("username", settings.username), ("password", settings.password)):
            if value is not None and not (value and all(" " <= c <= "~" for c in value)):
                # smtplib encodes AUTH PLAIN and LOGIN credentials as ASCII.
                raise ConfigError(f"mail.{name} must be non-empty printable ASCII")
        if (
            host is not None
            and settings.username is not None
            and not settings.starttls
            and not _is_loopback(host)
        ):
            raise ConfigError(
                "mail.username and mail.password would be sent unencrypted to "
                f"{self.server}: set mail.starttls (RFC 3207)"
            )
        _REDACT.register(settings.username, settings.password)
        self._asset = AppriseAsset(
            app_id=SENDER_NAME,
            app_desc="HomeWarden notices",
            # apprise's own per-service limit (60 s by default), set to the same bound.
            service_timeout=self._send_timeout,
            secure_logging=True,
        )

    @property
    def enabled(self) -> bool:
        """True when an SMTP host is configured; otherwise :meth:`send` always raises."""
        return self._settings.smtp_host is not None

    @property
    def server(self) -> str:
        """The SMTP server as ``host:port`` (``[v6]:port`` for an IPv6 address), for messages;
        ``"(none)"`` when mail is not configured."""
        host = self._settings.smtp_host
        if host is None:
            return "(none)"
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{shown}:{self._settings.smtp_port}"

    def send(self, to: str, subject: str, body: str) -> None:
        """Send one plain-text mail (UTF-8, so any Unicode text) to ``to``, or raise.

        ``subject`` is one line; ``body`` is sent as given except that apprise drops trailing
        whitespace. The sender is ``HomeWarden <mail_from>``. Returns once the server accepted
        the message for ``to`` (RFC 5321 4.1.1.4 DATA answered 250): acceptance for delivery,
        not delivery itself. Blocks at most ``send_timeout`` seconds (plus 0.1 s).

        Raises:
            InvalidRequestError: ``to`` is not one plain address (rule: :func:`check_address`),
                ``subject`` holds a line break or other control character, or ``body`` is
                empty or only whitespace. Nothing is sent.
            NoticeDeliveryError: mail is not configured; or the server at ``host:port``
                (named in the message) is unreachable, timed out, refused the sender, the
                recipient or the credentials, or STARTTLS failed. The message carries what
                apprise reported, without the SMTP user name, password or ``to``.
        """
        check_address(to)
        if not isinstance(subject, str) or _has_control(subject):
            raise InvalidRequestError("subject must be one line of text without control characters")
        if not isinstance(body, str) or not body.strip():
            raise InvalidRequestError("body must be text with something besides whitespace")
        if not self.enabled:
            raise NoticeDeliveryError(
                "mail is not configured (no mail.smtp_host); notices stay in the app"
            )

        sender = Apprise(asset=self._asset)
        plugin = Apprise.instantiate(self._url(to), asset=self._asset)
        if plugin is None:
            raise NoticeDeliveryError(f"apprise did not accept the mail settings for {self.server}")
        # apprise reads addresses leniently (a display name may swallow part of one): send
        # only when it understood exactly our sender and our one recipient.
        targets = [t[1] for t in getattr(plugin, "targets", [])]
        if targets != [to]:
            raise InvalidRequestError(
                f"recipient address {to!r} cannot be sent to through apprise as written"
            )
        from_addr = getattr(plugin, "from_addr", (None, None))
        if from_addr[1] != self._settings.mail_from:
            raise ConfigError(
                f"apprise reads mail.mail_from {self._settings.mail_from!r} as {from_addr[1]!r}"
            )
        sender.add(plugin)

        result = sender.notify(
            body=body,
            title=subject,
            body_format=NotifyFormat.TEXT,
            interpret_escapes=False,
            timeout=self._send_timeout,
            log_level=logging.DEBUG,
        )
        with result:
            if result.status == AppriseResultStatus.SUCCESS:
                return
            reasons = self._reasons(result, to)
            if result.status == AppriseResultStatus.TIMEOUT:
                raise NoticeDeliveryError(
                    f"mail via {self.server} did not finish within {self._send_timeout:g} s; "
                    "the server may still accept it" + (f" ({reasons})" if reasons else "")
                )
            raise NoticeDeliveryError(
                f"mail via {self.server} was not accepted" + (f": {reasons}" if reasons else "")
            )

    def _url(self, to: str) -> str:
        """The apprise URL of one message to ``to``. Every part is percent-encoded, so a
        ``/``, ``@``, ``:``, ``?`` or ``&`` in the password or an address stays itself."""
        s = self._settings
        assert s.smtp_host is not None
        auth = ""
        if s.username is not None and s.password is not None:
            auth = f"{quote(s.username, safe='')}:{quote(s.password, safe='')}@"
        params = {
            "smtp": s.smtp_host,
            "from": s.mail_from,
            "name": SENDER_NAME,
            "to": to,
            "format": "text",
            "cto": repr(self._socket_timeout),
            "verify": "yes",
            "retry": "0",
            # Nothing written to apprise's persistent store.
            "store": "no",
        }
        if s.starttls:
            params["mode"] = "starttls"
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        # The URL's host only seeds apprise's defaults, which smtp= and from= override; the
        # sender's domain is a valid host name by check_address.
        domain = s.mail_from.rsplit("@", 1)[1]
        schema = "mailtos" if s.starttls else "mailto"
        return f"{schema}://{auth}{domain}:{s.smtp_port}/?{query}"

    def _reasons(self, result: AppriseResult, to: str) -> str:
        """What apprise logged about a failed send: its warnings and errors, and the socket
        or SMTP exception it logs at DEBUG; secrets and the recipient replaced."""
        s = self._settings
        secrets = frozenset(
            f for secret in (s.username, s.password) if secret for f in _secret_forms(secret)
        )
        seen: list[str] = []
        for entry in result.logs():
            message = entry.message
            if entry.level not in _REASON_LEVELS and "Exception" not in message:
                continue
            message = _redact(message, secrets).replace(to, "<recipient>")
            if message not in seen:
                seen.append(message)
        return "; ".join(seen)
