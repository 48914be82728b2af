"""Camera management in the web app: the owner adds cameras, tests a connection, enables and
disables them, sets retention, and draws privacy masks and zones on a snapshot.

JSON API (``cameras:camera:manage``, owners; a camera of another household is a 404):

- ``GET /api/cameras/{name}/settings`` - the camera's settings (URL password masked);
- ``PUT /api/cameras/{name}/settings`` - add or change a camera (fields of ``CameraSettings``;
  fields not named keep their value; a ``***`` password keeps the stored one);
- ``DELETE /api/cameras/{name}/settings`` - delete a camera added in the app (204);
- ``POST /api/cameras/test-connection`` - open a URL with a short timeout: codec, size and
  frame rate, or what went wrong (``problem``: unreachable, auth, not-a-stream, unsupported).

Pages (forms POST with the ``csrf_token`` field and answer 303; a refused form re-renders
with the reason and 400):

- ``/settings/cameras`` - every camera the caller sees; for the owner also the source,
  retention, an enable/disable switch, a form to add one and one to test a URL
  (``POST /settings/connection-test``, outside ``/settings/cameras/`` so no camera name can
  shadow it);
- ``/settings/cameras/{name}`` - the owner's editor: source and retention, and the latest
  snapshot with a canvas polygon editor (``static/camera_editor.js``; no inline script, the
  pages' CSP forbids it) for masks and named zones in normalised 0..1 coordinates, saved as
  JSON form fields (editable by hand without script).

The use-cases and their audit entries are :class:`~homewarden.services.cameras.CameraAdmin`'s;
the runtime hands its own (whose changes reach the recorders at once) in
:attr:`AppContext.cameras`; without one, one is made here whose changes are stored and take
effect at the next start.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import Body, Depends, FastAPI, Form, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from homewarden.domain.audit import Actor
from homewarden.domain.permissions import Permission, Principal, is_allowed
from homewarden.errors import InvalidRequestError, NotFoundError
from homewarden.services.cameras import CameraAdmin, ConnectionTest, ManagedCamera
from homewarden.services.runtime import AppContext
from homewarden.web.deps import caller
from homewarden.web.pages import Pages, camera_status, see_other
from homewarden.web.routing import F, gated

MANAGE = Permission.CAMERAS_CAMERA_MANAGE
CameraName = Annotated[str, Path(description="camera name", max_length=64)]
Caller = Annotated[Principal, Depends(caller)]
TextField = Annotated[str, Form()]
#: Fixed notices of ``?saved=`` (never reflected text).
SAVED = {
    "1": "Camera saved.",
    "added": "Camera added. It starts recording within seconds.",
    "deleted": "Camera deleted. Its footage is kept until retention removes it.",
}


class ConnectionTestRequest(BaseModel):
    """A URL to test; with ``camera`` (one of yours), a ``***`` password is its stored one."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="rtsp://, rtsps:// or file: URL")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    camera: str | None = Field(default=None, max_length=64)


def _editor_url(name: str, **query: str) -> str:
    url = f"/settings/cameras/{quote(name, safe='')}"
    return url + ("?" + urlencode(query) if query else "")


def parse_areas(masks: str, zones: str) -> dict[str, Any]:
    """The editor's form fields as camera settings changes: ``masks`` a JSON list of
    polygons, ``zones`` a JSON object of name -> polygon (each polygon a list of ``[x, y]``
    in 0..1; the polygons themselves are checked by ``CameraSettings``).

    Raises:
        InvalidRequestError: not JSON, or not a list / an object.
    """
    try:
        mask_list = json.loads(masks or "[]")
        zone_map = json.loads(zones or "{}")
    except ValueError as exc:
        raise InvalidRequestError(f"masks and zones must be JSON: {exc}") from None
    if not isinstance(mask_list, list):
        raise InvalidRequestError("masks must be a JSON list of polygons")
    if not isinstance(zone_map, dict):
        raise InvalidRequestError("zones must be a JSON object of name: polygon")
    return {"motion": {"masks": mask_list}, "zones": zone_map}


def _number(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidRequestError(f"{what} must be a number") from None


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the camera management API and pages to ``app``."""
    admin = ctx.cameras
    if admin is None:
        admin = CameraAdmin(ctx.index, ctx.audit, ctx.settings, clock=ctx.clock)
        admin.load()
    _add_api(app, admin)
    _add_pages(app, ctx, admin)


def _add_api(app: FastAPI, admin: CameraAdmin) -> None:
    @gated(app, "GET", "/api/cameras/{name}/settings", MANAGE, tags=["cameras"])
    def get_settings(name: CameraName, who: Caller) -> ManagedCamera:
        """A camera's settings as its owner manages them; the URL's password is masked."""
        return admin.camera(who, name)

    @gated(app, "PUT", "/api/cameras/{name}/settings", MANAGE, tags=["cameras"])
    def put_settings(
        name: CameraName,
        who: Caller,
        changes: Annotated[
            dict[str, Any],
            Body(
                description="fields of the camera's settings (url, enabled, motion, zones, "
                "retention, ...); fields not named keep their value",
                examples=[{"url": "rtsp://192.0.2.10:554/stream1", "enabled": True}],
            ),
        ],
    ) -> ManagedCamera:
        """Add a camera to the caller's household, or change one of its cameras; recording
        follows within seconds. A URL whose password is ``***`` keeps the stored password."""
        return admin.put(who, name, changes, Actor.of_principal(who))

    @gated(
        app,
        "DELETE",
        "/api/cameras/{name}/settings",
        MANAGE,
        tags=["cameras"],
        status_code=204,
        response_class=Response,
    )
    def delete_settings(name: CameraName, who: Caller) -> Response:
        """Delete a camera added in the app (a config file's camera is disabled instead);
        its footage stays until retention removes it."""
        admin.delete(who, name, Actor.of_principal(who))
        return Response(status_code=204)

    @gated(app, "POST", "/api/cameras/test-connection", MANAGE, tags=["cameras"])
    def test_connection(body: ConnectionTestRequest, who: Caller) -> ConnectionTest:
        """Open the URL with a short timeout and read its first video packet: codec, size
        and frame rate, or what went wrong (``ok`` false; ``problem`` unreachable, auth,
        not-a-stream or unsupported). A URL that is not a camera URL is a 422."""
        return admin.test_connection(
            who, body.url, camera=body.camera, rtsp_transport=body.rtsp_transport
        )


def _add_pages(app: FastAPI, ctx: AppContext, admin: CameraAdmin) -> None:
    pages = Pages(ctx)

    def page(method: str, path: str, *permissions: Permission) -> Callable[[F], F]:
        return gated(
            app, method, path, *permissions, include_in_schema=False, response_class=HTMLResponse
        )

    def me(request: Request) -> Principal:
        return pages.caller(request).principal

    def list_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        test: ConnectionTest | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        who = me(request)
        manage = is_allowed(who, MANAGE)
        managed = {m.name: m for m in admin.cameras(who)} if manage else {}
        rows = []
        for view in ctx.queries.cameras(viewer=who):
            state, since = camera_status(view)
            rows.append(
                {"view": view, "status": state, "since": since, "m": managed.get(view.name)}
            )
        return pages.render(
            request,
            "settings_cameras.html",
            status,
            rows=rows,
            manage=manage,
            error=error,
            test=test,
            form=form or {},
            saved=SAVED.get(request.query_params.get("saved", "")),
        )

    def editor_page(
        request: Request,
        name: str,
        status: int = 200,
        error: str | None = None,
        test: ConnectionTest | None = None,
        areas: dict[str, str] | None = None,
    ) -> Response:
        cam = admin.camera(me(request), name)
        fields = cam.settings
        masks = json.dumps(fields["motion"]["masks"])
        zones = json.dumps(fields["zones"])
        if areas is not None:  # a refused save: show what was sent, to fix it
            masks, zones = areas["masks"], areas["zones"]
        return pages.render(
            request,
            "settings_camera.html",
            status,
            cam=cam,
            fields=fields,
            masks_json=masks,
            zones_json=zones,
            error=error,
            test=test,
            saved=SAVED.get(request.query_params.get("saved", "")),
        )

    @page(
        "GET", "/settings/cameras", Permission.CAMERAS_CAMERA_READ, Permission.CAMERAS_STATUS_READ
    )
    def cameras(request: Request) -> Response:
        """Every camera the caller sees; the owner also manages them here."""
        return list_page(request)

    @page("POST", "/settings/cameras", MANAGE)
    def add_camera(request: Request, name: TextField = "", url: TextField = "") -> Response:
        """Add a camera to the owner's household (name and URL; the rest takes defaults)."""
        who = me(request)
        name = name.strip()
        try:
            if name in admin.current().cameras:
                raise InvalidRequestError(f"a camera named {name!r} exists; choose another name")
            admin.put(who, name, {"url": url.strip()}, Actor.of_principal(who))
        except (InvalidRequestError, NotFoundError) as exc:
            # NotFound: the name is another household's; say only that it cannot be used.
            detail = str(exc) if isinstance(exc, InvalidRequestError) else f"{name!r} is taken"
            return list_page(request, 400, detail, form={"name": name, "url": url})
        return see_other("/settings/cameras?saved=added")

    @page("POST", "/settings/connection-test", MANAGE)
    def connection_test(
        request: Request, url: TextField = "", camera: TextField = "", transport: TextField = "tcp"
    ) -> Response:
        """Test a URL; the result is shown on the page it came from."""
        who = me(request)
        try:
            result = admin.test_connection(
                who, url.strip(), camera=camera or None, rtsp_transport=transport
            )
        except InvalidRequestError as exc:
            if camera:
                return editor_page(request, camera, 400, str(exc))
            return list_page(request, 400, str(exc), form={"url": url})
        if camera:
            return editor_page(request, camera, test=result)
        return list_page(request, test=result, form={"url": url})

    @page("POST", "/settings/cameras/{name}/enabled", MANAGE)
    def set_enabled(request: Request, name: CameraName, enabled: TextField = "") -> Response:
        """Switch a camera on (``enabled=1``) or off (``0``)."""
        who = me(request)
        admin.set_enabled(who, name, enabled == "1", Actor.of_principal(who))
        return see_other("/settings/cameras?saved=1")

    @page("GET", "/settings/cameras/{name}", MANAGE)
    def editor(request: Request, name: CameraName) -> Response:
        """One camera's source, retention, masks and zones."""
        return editor_page(request, name)

    @page("POST", "/settings/cameras/{name}", MANAGE)
    def save_source(
        request: Request,
        name: CameraName,
        url: TextField = "",
        transport: TextField = "tcp",
        continuous_days: TextField = "",
        event_days: TextField = "",
    ) -> Response:
        """Save the source and retention days of a camera."""
        who = me(request)
        try:
            changes = {
                "url": url.strip(),
                "rtsp_transport": transport,
                "retention": {
                    "continuous_days": _number(continuous_days, "continuous days"),
                    "event_days": _number(event_days, "event days"),
                },
            }
            admin.put(who, name, changes, Actor.of_principal(who))
        except InvalidRequestError as exc:
            return editor_page(request, name, 400, str(exc))
        return see_other(_editor_url(name, saved="1"))

    @page("POST", "/settings/cameras/{name}/areas", MANAGE)
    def save_areas(
        request: Request, name: CameraName, masks: TextField = "", zones: TextField = ""
    ) -> Response:
        """Save the privacy masks and zones drawn on the editor."""
        who = me(request)
        try:
            admin.put(who, name, parse_areas(masks, zones), Actor.of_principal(who))
        except InvalidRequestError as exc:
            return editor_page(request, name, 400, str(exc), areas={"masks": masks, "zones": zones})
        return see_other(_editor_url(name, saved="1"))

    @page("POST", "/settings/cameras/{name}/delete", MANAGE)
    def delete(request: Request, name: CameraName) -> Response:
        """Delete a camera added in the app."""
        who = me(request)
        try:
            admin.delete(who, name, Actor.of_principal(who))
        except InvalidRequestError as exc:
            return editor_page(request, name, 400, str(exc))
        return see_other("/settings/cameras?saved=deleted")
