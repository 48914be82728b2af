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
    ├── AuthenticationError          no, wrong or expired credentials (password, TOTP, link)
    │   └── TooManyAttemptsError     too many failed logins: try again after ``retry_after``
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
    └── VerificationError            a proof, signature or the audit log does not check out
        ├── InvalidProofError            an inclusion or consistency proof does not verify
        ├── InvalidSignatureError        a signature does not verify, or its key is unknown
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


class VerificationError(HomeWardenError):
    """Something that must verify does not (a proof, a signature, the audit log)."""

    code = "verification"


class InvalidProofError(VerificationError):
    """An RFC 9162 inclusion or consistency proof does not verify, or cannot be built."""

    code = "invalid-proof"


class InvalidSignatureError(VerificationError):
    """A signature does not verify, is malformed, or was made by a key that is not known."""

    code = "invalid-signature"


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
