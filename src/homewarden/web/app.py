"""The JSON API: FastAPI app factory and its routes.

Routes only parse input, call a :class:`homewarden.services.queries.Queries` use-case and
shape the answer; read logic lives in the service. Every camera-scoped route passes the caller
(:func:`homewarden.web.deps.caller`) down as ``viewer``, so lists show only the cameras the
caller may see and a named camera or event outside them is a 404 (another household) or 403;
routes that serve footage pass the reason ``"api"`` too, and the service writes the audit
entry (the web layer never does). Every route declares its permission with
:func:`homewarden.web.deps.requires` (the OpenAPI route too), and the factory
refuses to build an app with an ungated route. Errors are RFC 9457 problem documents
(:mod:`homewarden.web.problems`).

Times in query parameters are float UTC epoch seconds or ISO 8601 (naive means UTC), from
1970 to the end of 9999; times in answers are float UTC epoch seconds. Ids in paths are
``1 .. 2**63 - 1`` (a 422 problem outside; an id no row can have is a 404).

Clips answer Range requests (RFC 9110 section 14). A Range header that is invalid or names
a unit other than ``bytes`` is ignored and the whole clip served with 200 (section 14.2: a
server MUST ignore an unknown unit and MAY ignore an invalid range); an unsatisfiable one is
a 416 problem carrying ``Content-Range: bytes */<size>`` (section 15.5.17).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from homewarden import __version__
from homewarden.domain.audit import Actor
from homewarden.domain.permissions import Permission, Principal
from homewarden.errors import InvalidRequestError, NotFoundError
from homewarden.services.queries import (
    MAX_EVENT_PAGE,
    MAX_ID,
    CameraView,
    ClipFile,
    EventPage,
    EventView,
    GapView,
    HealthView,
    HourView,
    Queries,
    RecordingView,
    parse_span,
    parse_time,
)
from homewarden.services.runtime import AppContext
from homewarden.services.sealed_footage import SessionKeys
from homewarden.store.accounts_store import SessionRecord
from homewarden.web import (
    auth_routes,
    camera_routes,
    disclosure_pages,
    disclosure_routes,
    escrow_routes,
    key_routes,
    live,
    metrics_routes,
    pages,
    push_routes,
    report_routes,
    webhook_routes,
)
from homewarden.web.deps import caller, current_session, undeclared_routes
from homewarden.web.problems import (
    PROBLEM_MEDIA_TYPE,
    ProblemType,
    install_problem_handlers,
    problem_response,
    problem_type,
)
from homewarden.web.routing import F, gated

OPENAPI_URL = "/api/openapi.json"

_TIME_HELP = "UTC epoch seconds (float) or ISO 8601; ISO without an offset is UTC"
CameraQ = Annotated[str | None, Query(description="camera name")]
SinceQ = Annotated[str | None, Query(description=f"start of the span, {_TIME_HELP}")]
UntilQ = Annotated[str | None, Query(description=f"end of the span (exclusive), {_TIME_HELP}")]
EventId = Annotated[int, Path(description="event id", ge=1, le=MAX_ID)]
CameraName = Annotated[str, Path(description="camera name")]
Caller = Annotated[Principal, Depends(caller)]
Session = Annotated[SessionRecord | None, Depends(current_session)]
#: Why the API served footage, as written into the audit entry.
API_REASON = "api"


#: One RFC 9110 byte range-spec: ``first-last``, ``first-`` or the suffix form ``-length``
#: (ASCII digits only: RFC 5234 DIGIT, where ``\d`` would take any Unicode digit).
_BYTE_RANGE_SPEC = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")


def valid_byte_ranges(value: str) -> bool:
    """Whether a Range header value is a valid ``bytes`` ranges-specifier (RFC 9110 section
    14.1.2): unit ``bytes``, at least one range-spec, each ``first-[last]`` with
    ``last >= first`` or ``-suffix``. Whether it fits the file is another question (416)."""
    unit, eq, range_set = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return False
    specs = [spec.strip() for spec in range_set.split(",") if spec.strip()]
    if not specs:
        return False
    for spec in specs:
        m = _BYTE_RANGE_SPEC.fullmatch(spec)
        if m is None:
            return False
        first, last = m.group(1), m.group(2)
        if first is not None and last and int(last) < int(first):
            return False
    return True


class ClipResponse(FileResponse):
    """A :class:`FileResponse` (which answers Range requests with 206, so players can seek)
    that ignores an invalid Range header and answers an unsatisfiable one with a 416
    problem document instead of Starlette's plain-text 400 and 416 (see the module
    docstring)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the file; see the class docstring for what differs from FileResponse."""
        asked = Headers(scope=scope).get("range")
        if asked is not None and not valid_byte_ranges(asked):
            kept = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
            scope = {**scope, "headers": kept}
        unsatisfiable: dict[str, str] = {}

        async def problem_on_416(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 416:
                headers = Headers(raw=message["headers"])
                unsatisfiable["content-range"] = headers.get("content-range", "bytes */0")
                return
            if not unsatisfiable:
                await send(message)
                return
            if message["type"] == "http.response.body" and not message.get("more_body"):
                size = unsatisfiable["content-range"].rpartition("/")[2]
                await problem_response(
                    Request(scope),
                    status=416,
                    title="Range Not Satisfiable",
                    detail=f"range {asked!r} is outside the clip of {size} bytes",
                    headers={"Content-Range": unsatisfiable["content-range"]},
                )(scope, receive, send)

        await super().__call__(scope, receive, problem_on_416)


def _clip_headers(clip: ClipFile) -> dict[str, str]:
    return {
        "X-Clip-Duration": f"{clip.duration:.3f}",
        "X-Clip-Start": f"{clip.start:.3f}",
        "X-Clip-End": f"{clip.end:.3f}",
        **NO_STORE,
    }


def _clip_name(clip: ClipFile) -> str:
    return f"{clip.camera}-{clip.start:.3f}-{clip.end:.3f}.mp4"


def _clip_response(request: Request, clip: ClipFile, queries: Queries) -> Response:
    if clip.sealed:
        return _sealed_clip_response(request, clip, queries)
    return ClipResponse(
        clip.path,
        media_type="video/mp4",
        filename=_clip_name(clip),
        content_disposition_type="inline",
        headers=_clip_headers(clip),
    )


def single_byte_range(value: str, size: int) -> tuple[int, int] | None:
    """The ``[start, end)`` of a Range header holding one valid ``bytes`` range-spec over a
    representation of ``size`` bytes (RFC 9110 section 14.1.2); None when the header is
    invalid or names several ranges (then the whole is served with 200: section 14.2 lets
    a server ignore Range).

    Raises:
        InvalidRequestError: the range is unsatisfiable (it starts at or past the end, or is
            a zero-length suffix): the caller answers 416.
    """
    if not valid_byte_ranges(value):
        return None
    specs = [spec.strip() for spec in value.partition("=")[2].split(",") if spec.strip()]
    if len(specs) != 1:
        return None
    m = _BYTE_RANGE_SPEC.fullmatch(specs[0])
    assert m is not None  # valid_byte_ranges matched it
    first, last, suffix = m.groups()
    if suffix is not None:
        length = int(suffix)
        if length == 0 or size == 0:
            raise InvalidRequestError(f"range {value!r} is empty")
        return max(0, size - length), size
    lo = int(first)
    if lo >= size:
        raise InvalidRequestError(f"range {value!r} starts past the end")
    return lo, size if not last else min(size, int(last) + 1)


def _sealed_clip_response(request: Request, clip: ClipFile, queries: Queries) -> Response:
    """A clip of sealed footage, in memory (:meth:`Queries.clip_chunks`): the whole (200) or
    one byte range (206, RFC 9110 section 14.4); an unsatisfiable range is a 416 problem,
    as for files."""
    size = clip.bytes
    headers = {
        **_clip_headers(clip),
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{_clip_name(clip)}"',
    }
    asked = request.headers.get("range")
    span: tuple[int, int] | None = None
    if asked is not None:
        try:
            span = single_byte_range(asked, size)
        except InvalidRequestError:
            return problem_response(
                request,
                status=416,
                title="Range Not Satisfiable",
                detail=f"range {asked!r} is outside the clip of {size} bytes",
                headers={"Content-Range": f"bytes */{size}"},
            )
    lo, hi = span if span is not None else (0, size)
    if span is not None:
        headers["Content-Range"] = f"bytes {lo}-{hi - 1}/{size}"
    headers["Content-Length"] = str(hi - lo)
    return StreamingResponse(
        queries.clip_chunks(clip, lo, hi),
        status_code=206 if span is not None else 200,
        media_type="video/mp4",
        headers=headers,
    )


#: Footage is never kept in a browser's or proxy's cache (RFC 9111 section 5.2.2.5): each view
#: must reach the server, and so the audit log, and nothing stays on the viewer's disk.
NO_STORE = {"Cache-Control": "no-store, private"}


def _is_playback(request: Request) -> bool:
    """A player fetching byte ranges to show a clip (``<video>`` sends ``Range``), as opposed
    to a download of the whole file."""
    return "range" in request.headers


def _get(app: FastAPI, path: str, *permissions: Permission, **kwargs: Any) -> Callable[[F], F]:
    return gated(app, "GET", path, *permissions, **kwargs)


def _add_api_routes(app: FastAPI, ctx: AppContext) -> None:
    queries = ctx.queries

    def keys(session: SessionRecord | None) -> SessionKeys:
        """The household keys the caller's session unlocked (sealed footage opens only in a
        session signed in with its password on this server; a token's calls get 401)."""
        return SessionKeys(ctx.keys, session)

    @_get(
        app,
        "/api/cameras",
        Permission.CAMERAS_CAMERA_READ,
        Permission.CAMERAS_STATUS_READ,
        tags=["cameras"],
    )
    def list_cameras(who: Caller) -> list[CameraView]:
        """Every configured or running camera the caller may see, with its live status and
        index facts."""
        return queries.cameras(viewer=who)

    @_get(
        app,
        "/api/cameras/{name}",
        Permission.CAMERAS_CAMERA_READ,
        Permission.CAMERAS_STATUS_READ,
        tags=["cameras"],
    )
    def get_camera(name: CameraName, who: Caller) -> CameraView:
        """One camera with its live status."""
        return queries.camera(name, viewer=who)

    @_get(
        app,
        "/api/cameras/{name}/clip.mp4",
        Permission.FOOTAGE_CLIP_DOWNLOAD,
        response_class=FileResponse,
        responses={200: {"content": {"video/mp4": {}}, "description": "the clip (MP4)"}},
        tags=["footage"],
    )
    def camera_clip(
        request: Request,
        name: CameraName,
        start: Annotated[str, Query(description=f"clip start, {_TIME_HELP}")],
        end: Annotated[str, Query(description=f"clip end, {_TIME_HELP}")],
        who: Caller,
        session: Session,
    ) -> Response:
        """A clip of any time range, remuxed from the segments (no re-encode), seekable
        (Range requests). At most one hour (longer spans are a 422 problem). Audited: a
        download (no Range header) every time as ``footage:clip:download``; a player's range
        requests as one ``footage:playback:view`` per viewing. Sealed footage opens with the
        household keys of the caller's password session: without them (an API token, a
        session unlocked on another server or before a restart) a 401 ``keys-locked``."""
        lo = parse_time(start, name="start")
        hi = parse_time(end, name="end")
        clip = queries.range_clip(
            name,
            lo,
            hi,
            actor=Actor.of_principal(who),
            reason=API_REASON,
            viewer=who,
            playback=_is_playback(request),
            keys=keys(session),
        )
        return _clip_response(request, clip, queries)

    @_get(
        app,
        "/api/recordings",
        Permission.FOOTAGE_RECORDING_READ,
        tags=["footage"],
    )
    def list_recordings(
        who: Caller, camera: CameraQ = None, since: SinceQ = None, until: UntilQ = None
    ) -> list[RecordingView]:
        """Segments overlapping ``[since, until)``, by camera then start."""
        lo, hi = parse_span(since, until)
        return queries.recordings(camera, lo, hi, viewer=who)

    @_get(
        app,
        "/api/recordings/summary",
        Permission.FOOTAGE_RECORDING_READ,
        tags=["footage"],
    )
    def recordings_summary(
        who: Caller, camera: CameraQ = None, since: SinceQ = None, until: UntilQ = None
    ) -> list[HourView]:
        """Recorded seconds, bytes, segments and events per UTC hour (default: the last day)."""
        lo, hi = parse_span(since, until)
        return queries.summary(camera, lo, hi, viewer=who)

    @_get(app, "/api/gaps", Permission.FOOTAGE_RECORDING_READ, tags=["footage"])
    def list_gaps(
        who: Caller, camera: CameraQ = None, since: SinceQ = None, until: UntilQ = None
    ) -> list[GapView]:
        """Outages (no footage) overlapping ``[since, until)``; ``end`` null while ongoing."""
        lo, hi = parse_span(since, until)
        return queries.gaps(camera, lo, hi, viewer=who)

    @_get(app, "/api/events", Permission.EVENTS_EVENT_READ, tags=["events"])
    def list_events(
        who: Caller,
        camera: CameraQ = None,
        label: Annotated[str | None, Query(description="motion or person")] = None,
        zone: Annotated[str | None, Query(description="zone the event entered")] = None,
        since: SinceQ = None,
        until: UntilQ = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 50,
    ) -> EventPage:
        """Events newest first, one page at a time."""
        lo, hi = parse_span(since, until)
        return queries.events(camera, label, zone, lo, hi, cursor, limit, viewer=who)

    @_get(
        app,
        "/api/events/{event_id}",
        Permission.EVENTS_EVENT_READ,
        tags=["events"],
    )
    def get_event(event_id: EventId, who: Caller) -> EventView:
        """One event."""
        return queries.event(event_id, viewer=who)

    @_get(
        app,
        "/api/events/{event_id}/snapshot.jpg",
        Permission.FOOTAGE_SNAPSHOT_READ,
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}, "description": "the snapshot"}},
        tags=["events"],
    )
    def event_snapshot(event_id: EventId, who: Caller, session: Session) -> Response:
        """The JPEG of the event's frame with the most motion (an entry of the audit log).
        A sealed one needs the caller's unlocked session, as clips do."""
        image = queries.snapshot_jpeg(
            event_id,
            actor=Actor.of_principal(who),
            reason=API_REASON,
            viewer=who,
            keys=keys(session),
        )
        return Response(image, media_type="image/jpeg", headers=NO_STORE)

    @_get(
        app,
        "/api/events/{event_id}/clip.mp4",
        Permission.FOOTAGE_CLIP_DOWNLOAD,
        response_class=FileResponse,
        responses={200: {"content": {"video/mp4": {}}, "description": "the clip (MP4)"}},
        tags=["events"],
    )
    def event_clip(request: Request, event_id: EventId, who: Caller, session: Session) -> Response:
        """The event's footage, remuxed from the segments, seekable (Range requests); audited
        as the camera's clips are (a download each time, a player's viewing once). Sealed
        footage needs the caller's unlocked session, as the camera's clips do."""
        actor = Actor.of_principal(who)
        clip = queries.event_clip(
            event_id,
            actor=actor,
            reason=API_REASON,
            viewer=who,
            playback=_is_playback(request),
            keys=keys(session),
        )
        return _clip_response(request, clip, queries)

    @_get(app, "/api/health", Permission.SYSTEM_HEALTH_READ, tags=["system"])
    def health() -> HealthView:
        """Health of the index, cameras and disk. ``status`` is ``ok`` only when every
        enabled camera is connected, no gap is open or just ended, and the disk is above the
        emergency guard's floor; otherwise ``degraded``, with ``reasons``. Both answer
        **200**: the API itself works, and a monitor reads ``status`` (an HTTP error would
        hide the reasons, and a load balancer would take a working API out of service). An
        index that does not answer is a 503 problem."""
        return queries.health()


def _add_docs_routes(app: FastAPI) -> None:
    @_get(app, OPENAPI_URL, Permission.SYSTEM_OPENAPI_READ, include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @_get(app, "/api/problems/{code}", Permission.SYSTEM_OPENAPI_READ, tags=["system"])
    def describe_problem(code: str) -> ProblemType:
        """What a problem document's ``type`` URI means."""
        found = problem_type(code)
        if found is None:
            raise NotFoundError(f"no problem type {code!r}")
        return found


def _serve_problems_in_openapi(app: FastAPI) -> None:
    """Describe error responses as ``application/problem+json`` in the OpenAPI document
    (FastAPI files a response ``model`` under ``application/json``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for op in operations.values():
                for code, response in op.get("responses", {}).items():
                    content = response.get("content", {})
                    if str(code)[0] in "45" and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(ctx: AppContext) -> FastAPI:
    """Build the web app and JSON API over the runtime's services ``ctx``.

    OpenAPI is served at ``/api/openapi.json`` (gated by ``system:openapi:read``); each
    operation lists its permissions as ``x-permissions``. There is no Swagger UI page: FastAPI's
    loads its scripts from a third-party CDN, which would tell an outsider when the owner looks.

    Raises:
        RuntimeError: a route declares no permission (a programming error, caught at start).
    """
    app = FastAPI(
        title="HomeWarden",
        version=__version__,
        summary="Recordings, events and clips of a home camera recorder.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.accounts = ctx.accounts
    app.state.ctx = ctx
    install_problem_handlers(app)
    _add_api_routes(app, ctx)
    auth_routes.add_routes(app, ctx)
    live.add_routes(app, ctx)
    push_routes.add_routes(app, ctx)
    camera_routes.add_routes(app, ctx)
    disclosure_routes.add_routes(app, ctx)
    disclosure_pages.add_routes(app, ctx)
    webhook_routes.add_routes(app, ctx)
    key_routes.add_routes(app, ctx)
    escrow_routes.add_routes(app, ctx)
    report_routes.add_routes(app, ctx)
    metrics_routes.add_routes(app, ctx)
    pages.add_routes(app, ctx)
    _add_docs_routes(app)
    _serve_problems_in_openapi(app)
    missing = undeclared_routes(app)
    if missing:
        raise RuntimeError(f"routes without a declared permission: {', '.join(missing)}")
    return app
