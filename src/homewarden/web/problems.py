"""RFC 9457 problem documents: the one place errors become HTTP responses.

Every :class:`HomeWardenError` maps to a status by its class (the nearest class in
:data:`STATUS_BY_ERROR` along its MRO); FastAPI's request validation errors and Starlette's
HTTP exceptions (unknown route, wrong method) are rendered the same way, so a client only ever
parses one error shape::

    {"type": ".../api/problems/not-found", "title": "Not found", "status": 404,
     "detail": "no camera named 'garage'", "instance": "/api/cameras/garage"}

``type`` is an absolute URI under this API that resolves to the problem type's description
(RFC 9457 section 3.1.1 recommends absolute, dereferenceable type URIs) - for every class of
the tree, listed in the table or not; errors without a HomeWarden type use ``about:blank``
with the HTTP reason phrase as title (section 4.2.1).

Two choices worth stating:

- The audit log's :class:`VerificationError` family (``log-tampered``, ``invalid-proof``,
  ``invalid-signature``, ``verification``) is a **500**: the server's own evidence failed its
  integrity check. It is not a conflict the client could resolve by changing its request
  (what RFC 9110 section 15.5.10 reserves 409 for), nor an outage a retry cures (503). The
  type says which check failed; a ``log-tampered`` problem also carries ``first_bad_index``
  and ``bad_range`` (RFC 9457 section 3.2 extension members), and ``homewarden audit verify``
  locates the damage. Footage is never served past such a failure.
- Footage that is not served because its access cannot be written to the audit log is a
  **503** of type ``audit-unavailable`` (the database refused the entry; retry later), not a
  bare ``database`` problem, so a client learns why it got no footage.

An error nobody handled is logged once - one line naming the request and the error, then
the traceback without the web framework's frames - and answered with a plain 500 problem;
it is not handed on to the server, which would log it a second time.
"""

from __future__ import annotations

import logging
import math
import types
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homewarden.errors import (
    AuditUnavailableError,
    AuthenticationError,
    ClipError,
    ConfigError,
    CorruptSegmentError,
    DatabaseError,
    FootageUnavailableError,
    HomeWardenError,
    InvalidProofError,
    InvalidRequestError,
    InvalidSignatureError,
    InvalidTransitionError,
    KeyShareError,
    KeysLockedError,
    KeyUnavailableError,
    LogTamperedError,
    MediaError,
    NotFoundError,
    NoticeDeliveryError,
    PermissionDeniedError,
    SealedDataError,
    SealedTamperedError,
    SourceError,
    StorageError,
    TooManyAttemptsError,
    VerificationError,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

#: HTTP status and title per error class; a subclass not listed takes its nearest parent's.
STATUS_BY_ERROR: dict[type[HomeWardenError], tuple[int, str]] = {
    HomeWardenError: (500, "Internal error"),
    ConfigError: (500, "Configuration error"),
    NotFoundError: (404, "Not found"),
    InvalidRequestError: (422, "Invalid request"),
    PermissionDeniedError: (403, "Permission denied"),
    InvalidTransitionError: (409, "Conflict with the request's state"),
    AuthenticationError: (401, "Not signed in"),
    TooManyAttemptsError: (429, "Too many attempts"),
    KeysLockedError: (401, "Keys locked: sign in again with the password"),
    KeyUnavailableError: (403, "Household key unavailable"),
    KeyShareError: (422, "Custodian key shares cannot be combined"),
    StorageError: (503, "Storage unavailable"),
    CorruptSegmentError: (500, "Corrupt segment"),
    DatabaseError: (503, "Database unavailable"),
    AuditUnavailableError: (503, "Audit log unavailable: footage not served"),
    MediaError: (500, "Media error"),
    SourceError: (502, "Camera source error"),
    ClipError: (500, "Clip cannot be composed"),
    FootageUnavailableError: (503, "Footage unavailable"),
    NoticeDeliveryError: (503, "Notice could not be sent"),
    # 500, not 409 or 503: see the module docstring.
    VerificationError: (500, "Verification failed"),
    InvalidProofError: (500, "Invalid proof"),
    InvalidSignatureError: (500, "Invalid signature"),
    LogTamperedError: (500, "Audit log tampered"),
    SealedDataError: (500, "Sealed footage does not open: not served"),
    SealedTamperedError: (500, "Sealed footage tampered with: not served"),
}


def _error_classes(root: type[HomeWardenError]) -> list[type[HomeWardenError]]:
    return [root, *(c for sub in root.__subclasses__() for c in _error_classes(sub))]


#: Problem types by code (the tail of the ``type`` URI), for the documentation route: every
#: class of the tree, so every ``type`` a response carries resolves.
PROBLEM_TYPES: dict[str, type[HomeWardenError]] = {
    cls.code: cls for cls in _error_classes(HomeWardenError)
}


class Problem(BaseModel):
    """An RFC 9457 problem document (for the OpenAPI description of error responses)."""

    type: str = Field(description="URI of the problem type; about:blank for plain HTTP errors")
    title: str
    status: int
    detail: str
    instance: str = Field(description="path of the request that failed")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="validation errors (422 from request parsing only)"
    )


class ProblemType(BaseModel):
    """The description a problem ``type`` URI resolves to."""

    code: str
    title: str
    status: int
    description: str


def status_for(exc: HomeWardenError | type[HomeWardenError]) -> tuple[int, str]:
    """HTTP status and title for ``exc`` (an error or its class): its nearest class in
    :data:`STATUS_BY_ERROR`."""
    for cls in (exc if isinstance(exc, type) else type(exc)).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return STATUS_BY_ERROR[HomeWardenError]


def problem_type(code: str) -> ProblemType | None:
    """The documentation of problem type ``code``, or None when there is no such type."""
    cls = PROBLEM_TYPES.get(code)
    if cls is None:
        return None
    status, title = status_for(cls)
    doc = (cls.__doc__ or title).strip().splitlines()[0]
    return ProblemType(code=code, title=title, status=status, description=doc)


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` response for ``request``."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _type_uri(request: Request, code: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/api/problems/{code}"


async def _homewarden_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HomeWardenError)
    status, title = status_for(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    extra: dict[str, Any] | None = None
    if isinstance(exc, LogTamperedError):
        extra = {
            "first_bad_index": exc.first_bad_index,
            "bad_range": list(exc.bad_range) if exc.bad_range is not None else None,
        }
    headers: dict[str, str] | None = None
    if isinstance(exc, TooManyAttemptsError):
        # RFC 6585 section 4: a 429 MAY carry Retry-After (RFC 9110 10.2.3, seconds).
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    elif isinstance(exc, AuthenticationError):
        # RFC 9110 15.5.2: a 401 carries WWW-Authenticate; scripts use Bearer API tokens.
        headers = {"WWW-Authenticate": 'Bearer realm="homewarden"'}
    return problem_response(
        request,
        status=status,
        title=title,
        detail=str(exc) or title,
        type_=_type_uri(request, exc.code),
        extra=extra,
        headers=headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "the request is malformed"
    return problem_response(
        request,
        status=422,
        title=STATUS_BY_ERROR[InvalidRequestError][1],
        detail=detail,
        type_=_type_uri(request, InvalidRequestError.code),
        extra={"errors": errors},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    return problem_response(
        request,
        status=exc.status_code,
        title=phrase,
        detail=detail,
        headers=dict(exc.headers) if exc.headers else None,
    )


#: Packages whose frames say nothing about where an unexpected error came from: the web
#: framework and the async plumbing between the server and a route.
_FRAMEWORK_PACKAGES = frozenset({"starlette", "fastapi", "anyio", "asyncio", "concurrent"})


def _own_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the frames of :data:`_FRAMEWORK_PACKAGES` (the innermost frame is kept
    even when it is the framework's, so the raising line is never lost)."""
    frames: list[types.TracebackType] = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    kept = [
        f
        for i, f in enumerate(frames)
        if i == len(frames) - 1
        or str(f.tb_frame.f_globals.get("__name__", "")).split(".")[0] not in _FRAMEWORK_PACKAGES
    ]
    out: types.TracebackType | None = None
    for f in reversed(kept):
        out = types.TracebackType(out, f.tb_frame, f.tb_lasti, f.tb_lineno)
    return out


def log_unexpected(method: str, path: str, exc: BaseException) -> None:
    """Log an error nobody handled: one line, then the traceback without framework frames."""
    log.error(
        "%s %s failed unexpectedly: %s: %s",
        method,
        path,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, _own_frames(exc.__traceback__)),
    )


class UnexpectedErrorMiddleware:
    """ASGI middleware answering any exception that escaped the handlers with a 500 problem,
    logged once by :func:`log_unexpected`.

    Starlette's own last-resort handler re-raises after answering (so servers and test
    clients see the error), and uvicorn then logs the whole traceback again. This middleware
    sits inside it and does not re-raise. When the response has already started (a file
    failing mid-stream) no problem can be sent; the error is logged and the response left
    incomplete, which the server ends by closing the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the last resort: every error is answered
            request = Request(scope)
            log_unexpected(request.method, request.url.path, exc)
            if started:
                return
            response = problem_response(
                request, status=500, title="Internal error", detail="an unexpected error occurred"
            )
            await response(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error ``app`` can raise as an RFC 9457 problem document."""
    app.add_exception_handler(HomeWardenError, _homewarden_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnexpectedErrorMiddleware)


#: OpenAPI ``responses`` entry shared by every route.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": HTTPStatus(status).phrase, "model": Problem}
    for status in (403, 404, 422)
}
