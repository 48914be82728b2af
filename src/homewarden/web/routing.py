"""Declaring gated routes: every route states the permissions it needs (see
:mod:`homewarden.web.deps`) and they are listed in its OpenAPI operation as
``x-permissions``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI

from homewarden.domain.permissions import Permission
from homewarden.web.deps import requires
from homewarden.web.problems import PROBLEM_RESPONSES

F = TypeVar("F", bound=Callable[..., Any])


def gated(
    app: FastAPI, method: str, path: str, *permissions: Permission, **kwargs: Any
) -> Callable[[F], F]:
    """``app.api_route`` for ``method`` and ``path``, gated by ``permissions`` (at least one).

    Raises:
        TypeError: no permission given.
    """
    if not permissions:
        raise TypeError(f"{method} {path} declares no permission")
    responses = {**PROBLEM_RESPONSES, **kwargs.pop("responses", {})}
    extra = {**kwargs.pop("openapi_extra", {}), "x-permissions": sorted(permissions)}
    return app.api_route(
        path,
        methods=[method],
        dependencies=[requires(*permissions)],
        openapi_extra=extra,
        responses=responses,
        **kwargs,
    )
