"""The public transparency report: an HTML page, its JSON and CSV, and the public log export
to check it against (``homewarden report verify``). Anyone may read them
(``system:public:read``); nothing here names a household.

The report is counted at the newest signed tree head (the runtime signs heads as the log
grows) and cached per head and range, so visitors cannot make the deployment sign or recount
on every request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from homewarden.domain.permissions import Permission
from homewarden.services.disclosure import withheld_requests
from homewarden.services.report import (
    TransparencyReport,
    current_half_year,
    half_year,
    to_csv,
    to_html,
)
from homewarden.services.runtime import AppContext
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.web.routing import gated

PUBLIC = Permission.SYSTEM_PUBLIC_READ
Half = Annotated[str | None, Query(max_length=6, description="half-year like 2026H2")]


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the transparency report routes to ``app``."""
    store = DisclosureStore(ctx.index)
    reports = TransparencyReport(ctx.audit, lambda: withheld_requests(store, ctx.clock()))
    cache: dict[tuple[int, str], dict[str, Any]] = {}
    lock = threading.Lock()

    def report(half: str | None) -> dict[str, Any]:
        label = (half or current_half_year(ctx.clock())).upper()
        start, end = half_year(label)
        head = reports.head(sign_if_grown=False)
        key = (head.tree_size, label)
        with lock:
            if key not in cache:
                if len(cache) > 32:
                    cache.clear()
                cache[key] = reports.build(start, end, head=head)
            return cache[key]

    tags = ["transparency"]

    @gated(
        app,
        "GET",
        "/transparency",
        PUBLIC,
        tags=tags,
        response_class=HTMLResponse,
        include_in_schema=False,
    )
    def page(half: Half = None) -> Response:
        """The report as a page (current half-year unless ``half`` is given)."""
        label = (half or current_half_year(ctx.clock())).upper()
        return HTMLResponse(to_html(report(half), title=f"Transparency report {label}"))

    @gated(app, "GET", "/transparency/report.json", PUBLIC, tags=tags)
    def report_json(half: Half = None) -> JSONResponse:
        """The report as JSON (what ``homewarden report verify`` checks)."""
        return JSONResponse(report(half))

    @gated(
        app,
        "GET",
        "/transparency/report.csv",
        PUBLIC,
        tags=tags,
        response_class=Response,
        include_in_schema=False,
    )
    def report_csv(half: Half = None) -> Response:
        """The report as CSV (``figure,value``)."""
        return Response(to_csv(report(half)), media_type="text/csv; charset=utf-8")

    @gated(
        app,
        "GET",
        "/transparency/log.jsonl",
        PUBLIC,
        tags=tags,
        response_class=StreamingResponse,
        include_in_schema=False,
    )
    def log_export() -> StreamingResponse:
        """The public log export at the newest signed head (JSON Lines): request entries in
        full, every other entry as its leaf hash."""
        head = reports.head(sign_if_grown=False)

        def lines() -> Iterator[bytes]:
            chunk: list[str] = []
            for line in reports.public_lines(head):
                chunk.append(line)
                if len(chunk) >= 1000:
                    yield "".join(chunk).encode("utf-8")
                    chunk = []
            yield "".join(chunk).encode("utf-8")

        return StreamingResponse(lines(), media_type="application/x-ndjson")
