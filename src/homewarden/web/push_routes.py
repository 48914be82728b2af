"""(being written)"""

from __future__ import annotations

from fastapi import FastAPI

from homewarden.services.runtime import AppContext


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add this module's routes to ``app``."""
