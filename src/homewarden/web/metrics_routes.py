"""``GET /metrics``: Prometheus text exposition of the caller's cameras, the index, the disk
and the owner's disclosure request counts (:mod:`homewarden.services.metrics` says what and
for whom).

Gated by ``system:metrics:read`` (owners; API tokens keep it), so Prometheus scrapes with an
owner's API token::

    scrape_configs:
      - job_name: homewarden
        authorization: {type: Bearer, credentials_file: /etc/prometheus/homewarden.token}
        static_configs: [{targets: ["127.0.0.1:8765"]}]

Not in the OpenAPI document (it is not JSON). The answer is never cached
(``Cache-Control: no-store``): it is read at scrape time and names the household's cameras.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from homewarden.domain.permissions import Permission, Principal
from homewarden.services.metrics import Metrics
from homewarden.services.runtime import AppContext
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.web.deps import caller
from homewarden.web.disclosure_routes import service_of
from homewarden.web.routing import gated

METRICS_PATH = "/metrics"


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add ``GET /metrics`` to ``app``."""
    metrics = Metrics(
        ctx.queries,
        ctx.index,
        DisclosureStore(ctx.index),
        service_of(ctx).unnoticed_requests,
        ctx.current_settings,
        ctx.clock,
        jobs=None if ctx.jobs is None else ctx.jobs.depth,
    )

    @gated(
        app,
        "GET",
        METRICS_PATH,
        Permission.SYSTEM_METRICS_READ,
        response_class=Response,
        include_in_schema=False,
    )
    def scrape(who: Annotated[Principal, Depends(caller)]) -> Response:
        """The metrics the caller may see, in the Prometheus text format."""
        return Response(
            metrics.exposition(who),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store"},
        )
