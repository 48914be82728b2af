"""Permissions and the one deny-by-default decision about them. Pure.

Permissions are spelled ``scope:resource:action`` and kept sorted, after pypi/warehouse
(``warehouse/authnz/_permissions.py``). Who holds which permission is one table,
:data:`GRANTS`, consulted by :func:`is_allowed`; anything the table does not grant is denied
(warehouse's ``utils/security_policy.py`` habit).

Until accounts arrive (the web-app issue) there is exactly one principal that holds anything:
the local operator, i.e. a client connecting from a loopback address (DESIGN.md: "until then
the API binds only to loopback"). Every other client is anonymous and holds nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from homewarden.errors import PermissionDeniedError


class Permission(StrEnum):
    """Every permission a route or use-case can declare: ``scope:resource:action``, sorted."""

    CAMERAS_CAMERA_READ = "cameras:camera:read"
    CAMERAS_STATUS_READ = "cameras:status:read"
    EVENTS_EVENT_READ = "events:event:read"
    FOOTAGE_CLIP_DOWNLOAD = "footage:clip:download"
    FOOTAGE_RECORDING_READ = "footage:recording:read"
    FOOTAGE_SNAPSHOT_READ = "footage:snapshot:read"
    SYSTEM_HEALTH_READ = "system:health:read"
    SYSTEM_OPENAPI_READ = "system:openapi:read"


class PrincipalKind(StrEnum):
    """Who is asking. Accounts (owner, member, staff, requester) arrive with the web-app issue."""

    ANONYMOUS = "anonymous"
    LOCAL_OPERATOR = "local_operator"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a route or use-case.

    ``client_host`` is the peer address as the transport saw it (an IP literal), or None when
    unknown (then the principal can only be anonymous).
    """

    kind: PrincipalKind
    client_host: str | None


#: Deny-by-default grant table. A permission added to :class:`Permission` is held by nobody
#: until it is written here on purpose.
GRANTS: dict[PrincipalKind, frozenset[Permission]] = {
    PrincipalKind.ANONYMOUS: frozenset(),
    PrincipalKind.LOCAL_OPERATOR: frozenset(
        {
            Permission.CAMERAS_CAMERA_READ,
            Permission.CAMERAS_STATUS_READ,
            Permission.EVENTS_EVENT_READ,
            Permission.FOOTAGE_CLIP_DOWNLOAD,
            Permission.FOOTAGE_RECORDING_READ,
            Permission.FOOTAGE_SNAPSHOT_READ,
            Permission.SYSTEM_HEALTH_READ,
            Permission.SYSTEM_OPENAPI_READ,
        }
    ),
}


def is_loopback(host: str | None) -> bool:
    """True when ``host`` is an IPv4/IPv6 loopback literal (127.0.0.0/8, ::1, ::ffff:127.x).

    Names (``localhost``, ``testclient``) are not resolved here and count as not loopback:
    the transport reports the peer's address, never a name.
    """
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def principal_for_client(host: str | None) -> Principal:
    """The principal behind a connection from ``host`` (the peer's IP literal, or None)."""
    kind = PrincipalKind.LOCAL_OPERATOR if is_loopback(host) else PrincipalKind.ANONYMOUS
    return Principal(kind=kind, client_host=host)


def is_allowed(principal: Principal, permission: Permission | str) -> bool:
    """Whether ``principal`` holds ``permission``. Deny by default.

    Allowed only when the permission is a known :class:`Permission`, the principal's kind
    grants it in :data:`GRANTS`, and — for the local operator — the client really is on a
    loopback address (a forged kind on a remote address is still denied).
    """
    try:
        perm = Permission(permission)
    except ValueError:
        return False
    if principal.kind is PrincipalKind.LOCAL_OPERATOR and not is_loopback(principal.client_host):
        return False
    return perm in GRANTS.get(principal.kind, frozenset())


def check_permission(principal: Principal, permission: Permission | str) -> None:
    """Raise unless ``principal`` holds ``permission`` (see :func:`is_allowed`).

    Raises:
        PermissionDeniedError: the permission is not held; the message names it.
    """
    if not is_allowed(principal, permission):
        raise PermissionDeniedError(
            f"{permission} is not granted to {principal.kind} clients"
            + (f" ({principal.client_host})" if principal.client_host else "")
        )
