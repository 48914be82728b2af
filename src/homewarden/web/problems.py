"""RFC 9457 problem documents: the one place errors become HTTP responses.

Every :class:`HomeWardenError` maps to a status by its class (the nearest class in
:data:`STATUS_BY_ERROR` along its MRO); FastAPI's request validation errors and Starlette's
HTTP exceptions (unknown route, wrong method) are rendered the same way, so a client only ever
parses one error shape::

    {"type": ".../api/problems/not-found", "title": "Not found", "status": 404,
     "detail": "no camera named 'garage'", "instance": "/api/cameras/garage"}

``type`` is an absolute URI under this API that resolves to the problem type's description
(RFC 9457 section 3.1.1 recommends absolute, dereferenceable type URIs); errors without a
HomeWarden type use ``about:blank`` with the HTTP reason phrase as title (section 4.2.1).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from homewarden.errors import (
    ClipError,
    ConfigError,
    CorruptSegmentError,
    DatabaseError,
    FootageUnavailableError,
    HomeWardenError,
    InvalidRequestError,
    MediaError,
    NotFoundError,
    PermissionDeniedError,
    SourceError,
    StorageError,
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
    StorageError: (503, "Storage unavailable"),
    CorruptSegmentError: (500, "Corrupt segment"),
    DatabaseError: (503, "Database unavailable"),
    MediaError: (500, "Media error"),
    SourceError: (502, "Camera source error"),
    ClipError: (500, "Clip cannot be composed"),
    FootageUnavailableError: (503, "Footage unavailable"),
}

#: Problem types by code (the tail of the ``type`` URI), for the documentation route.
PROBLEM_TYPES: dict[str, type[HomeWardenError]] = {cls.code: cls for cls in STATUS_BY_ERROR}


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


def status_for(exc: HomeWardenError) -> tuple[int, str]:
    """HTTP status and title for ``exc``: its nearest class in :data:`STATUS_BY_ERROR`."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return STATUS_BY_ERROR[HomeWardenError]


def problem_type(code: str) -> ProblemType | None:
    """The documentation of problem type ``code``, or None when there is no such type."""
    cls = PROBLEM_TYPES.get(code)
    if cls is None:
        return None
    status, title = STATUS_BY_ERROR[cls]
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
    return problem_response(
        request,
        status=status,
        title=title,
        detail=str(exc) or title,
        type_=_type_uri(request, exc.code),
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


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request, status=500, title="Internal error", detail="an unexpected error occurred"
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error ``app`` can raise as an RFC 9457 problem document."""
    app.add_exception_handler(HomeWardenError, _homewarden_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


#: OpenAPI ``responses`` entry shared by every route.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": HTTPStatus(status).phrase, "model": Problem}
    for status in (403, 404, 422)
}
