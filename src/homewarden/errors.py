"""The one exception tree of HomeWarden.

Every error HomeWarden raises on purpose is a :class:`HomeWardenError`. Library errors (PyAV,
SQLAlchemy, OS errors) are translated into this tree at the adapter boundary, so callers above
the adapters never catch a library's exception type. The web layer maps the tree to RFC 9457
problem documents in one place (``homewarden.web.problems``).

::

    HomeWardenError
    ├── ConfigError                  bad or unknown configuration key, bad value
    ├── NotFoundError                no such camera / segment / event / footage in a span
    ├── InvalidRequestError          a caller's input is malformed (bad time range, bad cursor)
    ├── PermissionDeniedError        the caller lacks the permission a route declares
    │   └── KeyUnavailableError      the caller holds no such household key (revoked, rotated
    │                                away, never granted, another household's)
    ├── AuthenticationError          no, wrong or expired credentials (password, TOTP, link)
    │   ├── TooManyAttemptsError     too many failed logins: try again after ``retry_after``
    │   └── KeysLockedError          the session has no unlocked household keys: sign in again
    ├── StorageError                 disk full, unwritable data dir, missing segment file
    │   └── CorruptSegmentError      a segment file does not parse or decode
    ├── DatabaseError                the index cannot be opened or migrated
    │   └── AuditUnavailableError    an access cannot be written to the audit log: not served
    ├── MediaError                   anything PyAV reports while reading or writing media
    │   ├── SourceError              a camera cannot be reached or its stream is unusable
    │   │   ├── SourceUnreachableError   connection refused, unknown host, missing file
    │   │   ├── SourceStalledError       no packet for ``stall_timeout`` seconds
    │   │   └── UnsupportedStreamError   no video stream, or a codec we do not record
    │   └── ClipError                cannot compose a clip from the segments
    ├── FootageUnavailableError      no footage to be had now: camera offline (live view), or
    │                                the demo cannot find or fetch real footage
    ├── ModelUnavailableError        a detector model cannot be fetched, unpacked or loaded
    ├── JobQueueError                the background job queue (SQLite file, Redis) fails
    ├── SealedDataError              sealed footage or a wrapped key does not open (``reason``,
    │   │                            ``chunk_index``: the chunk, None for a header or a wrap)
    │   ├── SealedFormatError            not sealed data of a known version, cut short, malformed
    │   │   └── UnfinishedSegmentError   the writer never finished the segment (it stopped)
    │   ├── SealedTamperedError          fails authentication: changed, swapped, reordered,
    │   │                                truncated, moved between segments, renamed
    │   ├── WrongKeyError                sealed to another household key; wrong passphrase or
    │   │                                recovery code
    │   └── KeyShareError                custodian shares: mistyped, too few, duplicated, mixed
    ├── LeaseLostError               this recorder node no longer holds a camera's lease
    └── VerificationError            a proof, signature or the audit log does not check out
        ├── InvalidProofError            an inclusion or consistency proof does not verify
        ├── InvalidSignatureError        a signature does not verify, or its key is unknown
        │   └── WebhookSignatureError    a webhook call fails Standard Webhooks verification
        │       ├── WebhookHeaderError       a ``webhook-*`` header is missing or malformed
        │       ├── WebhookTimestampError    its timestamp is outside the tolerance (replay)
        │       └── WebhookMismatchError     no v1 signature matches (forged, other secret)
        ├── LogTamperedError             stored audit entries disagree with their tree / heads
        └── PackageTamperedError         an evidence package's files or audit record disagree
                                         with its signed manifest (changed, missing, extra)

Verifiers raise a :class:`VerificationError` with the reason; they never return False.
"""

from __future__ import annotations


class HomeWardenError(Exception):
    """Root of every error HomeWarden raises on purpose."""

    #: Short machine-readable code; also the tail of the RFC 9457 ``type`` URI.
    code: str = "error"


class ConfigError(HomeWardenError):
    """The configuration is invalid; the message names the dotted key path."""

    code = "config"


class NotFoundError(HomeWardenError):
    """A named thing (camera, event, segment, footage in a span) does not exist."""

    code = "not-found"


class InvalidRequestError(HomeWardenError):
    """A caller's input is malformed or out of range."""

    code = "invalid-request"


class PermissionDeniedError(HomeWardenError):
    """The caller lacks the permission a route or use-case declares."""

    code = "permission-denied"


class AuthenticationError(HomeWardenError):
    """The caller is not signed in, or presented wrong or expired credentials."""

    code = "authentication"


class TooManyAttemptsError(AuthenticationError):
    """Too many failed logins (SP 800-63B 5.2.2 throttling); ``retry_after`` is seconds."""

    code = "too-many-attempts"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KeyUnavailableError(PermissionDeniedError):
    """The caller holds no household key of that id: revoked from them, rotated away before
    they were granted it, never granted, unknown, or another household's
    (``homewarden.services.household_keys``)."""

    code = "key-unavailable"


class KeysLockedError(AuthenticationError):
    """The session holds no unlocked household keys: it ended or expired, it was made by an
    API token, or this server restarted since the password was given (keys live only in the
    memory of the server that unlocked them). Signing in again with the password unlocks
    them."""

    code = "keys-locked"


class InvalidTransitionError(HomeWardenError):
    """A disclosure request cannot take that step in its present state (a conflict: the
    request moved on, or the step is not on its path)."""

    code = "invalid-transition"


class StorageError(HomeWardenError):
    """Media storage failed: disk full, unwritable directory, missing file."""

    code = "storage"


class CorruptSegmentError(StorageError):
    """A segment file exists but does not parse or decode."""

    code = "corrupt-segment"


class DatabaseError(HomeWardenError):
    """The index database cannot be opened, migrated or written."""

    code = "database"


class AuditUnavailableError(DatabaseError):
    """Footage is not served because its access cannot be written to the audit log."""

    code = "audit-unavailable"


class MediaError(HomeWardenError):
    """PyAV/FFmpeg reported an error while reading or writing media."""

    code = "media"


class SourceError(MediaError):
    """A camera source failed; ``reason`` is a short stable word stored with the gap."""

    code = "source"
    reason: str = "error"


class SourceUnreachableError(SourceError):
    """Connection refused, unknown host, timeout on connect, or a missing file."""

    code = "source-unreachable"
    reason = "unreachable"


class SourceStalledError(SourceError):
    """The source sent no packet for ``stall_timeout`` seconds."""

    code = "source-stalled"
    reason = "stalled"


class UnsupportedStreamError(SourceError):
    """The source has no video stream, or its codec is one HomeWarden does not record."""

    code = "unsupported-stream"
    reason = "unsupported"


class ClipError(MediaError):
    """A clip cannot be composed from the recorded segments."""

    code = "clip"


class FootageUnavailableError(HomeWardenError):
    """Footage that is asked for cannot be had now: the camera is offline or disabled (live
    view), or the demo cannot find real footage locally nor fetch it from a registry."""

    code = "footage-unavailable"


class ModelUnavailableError(HomeWardenError):
    """A detector model cannot be fetched from its registry, unpacked, or loaded."""

    code = "model-unavailable"


class JobQueueError(HomeWardenError):
    """The background job queue cannot be reached or refuses an operation: Redis is down or
    refuses the connection, the SQLite ``jobs.db`` cannot be opened or written, a queued job
    does not pass its signature check (``homewarden.services.jobs``). The message names the
    queue without a password."""

    code = "job-queue"


class LeaseLostError(HomeWardenError):
    """This recorder node no longer holds a camera's lease (it expired, or another node took
    the camera with a higher fencing token): the camera's recorder must stop, and a segment
    it finished is refused by the index (see :mod:`homewarden.services.leases`)."""

    code = "lease-lost"


class VerificationError(HomeWardenError):
    """Something that must verify does not (a proof, a signature, the audit log)."""

    code = "verification"


class InvalidProofError(VerificationError):
    """An RFC 9162 inclusion or consistency proof does not verify, or cannot be built."""

    code = "invalid-proof"


class InvalidSignatureError(VerificationError):
    """A signature does not verify, is malformed, or was made by a key that is not known."""

    code = "invalid-signature"


class WebhookSignatureError(InvalidSignatureError):
    """A webhook call does not verify (Standard Webhooks; see
    :mod:`homewarden.crypto.webhook_signature`); a subclass says why."""

    code = "webhook-signature"


class WebhookHeaderError(WebhookSignatureError):
    """A ``webhook-id``, ``webhook-timestamp`` or ``webhook-signature`` header is missing or
    malformed."""

    code = "webhook-header"


class WebhookTimestampError(WebhookSignatureError):
    """A webhook call's timestamp is further from now than the tolerance (a replay, or a
    clock that is off)."""

    code = "webhook-timestamp"


class WebhookMismatchError(WebhookSignatureError):
    """No ``v1`` signature of a webhook call matches: forged, signed with another secret, or
    its body, id or timestamp changed."""

    code = "webhook-mismatch"


class LogTamperedError(VerificationError):
    """Stored audit entries disagree with their own tree or with a signed tree head.

    ``first_bad_index`` is the lowest entry index known to be changed, missing, inserted or
    out of place. When the stored tree hashes were rewritten too, a signed head can only bound
    the damage: ``first_bad_index`` is then None and ``bad_range`` is the ``[start, end)`` of
    entry indexes that holds the first bad one.
    """

    code = "log-tampered"

    def __init__(
        self,
        message: str,
        *,
        first_bad_index: int | None,
        bad_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.first_bad_index = first_bad_index
        self.bad_range = (
            bad_range
            if bad_range is not None or first_bad_index is None
            else (first_bad_index, first_bad_index + 1)
        )


class PackageTamperedError(VerificationError):
    """An evidence package disagrees with its own signed manifest: a file's bytes or size
    changed, a listed file is missing, an unlisted file is present, the manifest is malformed,
    or its audit record is about another package. ``name`` is the file concerned, if one."""

    code = "package-tampered"

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class NoticeDeliveryError(HomeWardenError):
    """A notice (owner notice, requester address check, staff alert) could not be handed to
    the mail server: mail is not configured, the server is unreachable or timed out, it refused
    the sender, the recipient or the credentials, or TLS failed. The message names the server's
    ``host:port``; it never holds the SMTP password or user name."""

    code = "notice-delivery"


class SealedDataError(HomeWardenError):
    """Sealed footage or a wrapped key does not open (:mod:`homewarden.crypto.sealing`,
    :mod:`homewarden.crypto.household_keys`). ``reason`` is a short stable phrase;
    ``chunk_index`` is the chunk of a sealed segment concerned, None for its header or for
    anything that is not a segment. Openers raise it; they never return None or False."""

    code = "sealed-data"

    def __init__(self, message: str, *, reason: str, chunk_index: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.chunk_index = chunk_index


class SealedFormatError(SealedDataError):
    """Not sealed data of a known format version: wrong magic, unknown version, cut short,
    fields that contradict each other."""

    code = "sealed-format"


class UnfinishedSegmentError(SealedFormatError):
    """A sealed segment whose writer never finished it (stopped or crashed): its header still
    holds the placeholder. Its complete chunks can be salvaged, without proof of its end."""

    code = "unfinished-segment"


class SealedTamperedError(SealedDataError):
    """Sealed data fails authentication: a byte changed, chunks swapped, reordered, truncated
    or moved from another segment, or the segment opened under another identity (renamed)."""

    code = "sealed-tampered"


class WrongKeyError(SealedDataError):
    """The key or secret offered does not open this: a segment sealed to another household
    key, a wrap opened with a wrong passphrase, recovery code or escrow key."""

    code = "wrong-key"


class KeyShareError(SealedDataError):
    """Custodian key shares cannot be combined: one is mistyped (bad checksum) or malformed,
    too few, the same share twice, or shares of different splits. ``share_position`` is the
    1-based position of the offending share in what was given, when one is to blame."""

    code = "key-share"

    def __init__(self, message: str, *, reason: str, share_position: int | None = None) -> None:
        super().__init__(message, reason=reason)
        self.share_position = share_position
