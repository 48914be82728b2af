"""Route dependencies: the permission gate every route declares.

A route declares what it needs with ``dependencies=[requires(Permission.X)]``. The gate asks
:func:`homewarden.domain.permissions.check_permission` about the caller and raises
:class:`PermissionDeniedError` (a 403 problem) unless allowed. :func:`undeclared_routes` finds
routes without a gate; :func:`homewarden.web.app.create_app` refuses to build an app that has
one, and a test walks the routes too, so a route cannot be added without deciding who may
call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from homewarden.domain.permissions import (
    Permission,
    Principal,
    check_permission,
    principal_for_client,
)


class PermissionGate:
    """A FastAPI dependency that lets a request through only if its caller holds every
    permission in ``permissions``; it returns the caller's :class:`Principal`."""

    def __init__(self, permissions: tuple[Permission, ...]) -> None:
        if not permissions:
            raise TypeError("a permission gate needs at least one permission")
        self.permissions = permissions

    def __call__(self, request: Request) -> Principal:
        """Raises PermissionDeniedError for the first permission the caller lacks."""
        principal = principal_for_client(request.client.host if request.client else None)
        for permission in self.permissions:
            check_permission(principal, permission)
        return principal

    def __repr__(self) -> str:
        return f"PermissionGate({', '.join(self.permissions)})"


def caller(request: Request) -> Principal:
    """The principal behind ``request`` (its peer address), for use-cases that account for
    who asked. Declare with ``who: Annotated[Principal, Depends(caller)]``; the route's
    permission gate still decides whether it may ask at all."""
    return principal_for_client(request.client.host if request.client else None)


def requires(*permissions: Permission) -> Any:
    """The dependency declaring (and enforcing) that a route needs ``permissions``.

    Use as ``@router.get(path, dependencies=[requires(Permission.X)])``.
    """
    return Depends(PermissionGate(tuple(permissions)))


def _gates(dependant: Dependant) -> Iterable[PermissionGate]:
    for dep in dependant.dependencies:
        if isinstance(dep.call, PermissionGate):
            yield dep.call
        yield from _gates(dep)


def declared_permissions(route: APIRoute) -> frozenset[Permission]:
    """Every permission the gates of ``route`` (and of its sub-dependencies) require."""
    return frozenset(p for gate in _gates(route.dependant) for p in gate.permissions)


def undeclared_routes(app: FastAPI) -> list[str]:
    """Routes of ``app`` that declare no permission (non-API routes and mounts always count),
    as ``"METHODS path"`` strings; empty when every route is gated."""
    missing: list[str] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            if not declared_permissions(route):
                missing.append(f"{','.join(sorted(route.methods or ()))} {route.path}")
        else:
            missing.append(f"{type(route).__name__} {getattr(route, 'path', '?')}")
    return missing
