"""The permission enum and the deny-by-default decision."""

from __future__ import annotations

import pytest

from homewarden.domain.permissions import (
    GRANTS,
    Permission,
    Principal,
    PrincipalKind,
    check_permission,
    is_allowed,
    is_loopback,
    principal_for_client,
)
from homewarden.errors import PermissionDeniedError


def test_permissions_are_scope_resource_action_and_sorted() -> None:
    values = [p.value for p in Permission]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    for value in values:
        parts = value.split(":")
        assert len(parts) == 3
        assert all(parts)
        assert value == value.lower()


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("203.0.113.5", False),
        ("10.0.0.1", False),
        ("::ffff:192.0.2.1", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),
        ("localhost", False),  # names are never trusted; the transport gives addresses
        ("testclient", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, loop: bool) -> None:
    assert is_loopback(host) is loop


@pytest.mark.parametrize("permission", list(Permission))
def test_local_operator_on_loopback_holds_every_current_permission(permission: Permission) -> None:
    for host in ("127.0.0.1", "::1"):
        principal = principal_for_client(host)
        assert principal.kind is PrincipalKind.LOCAL_OPERATOR
        assert is_allowed(principal, permission)
        assert is_allowed(principal, permission.value)
        check_permission(principal, permission)


@pytest.mark.parametrize("permission", list(Permission))
@pytest.mark.parametrize("host", ["203.0.113.5", "2001:db8::1", "testclient", None])
def test_remote_client_holds_nothing(permission: Permission, host: str | None) -> None:
    principal = principal_for_client(host)
    assert principal.kind is PrincipalKind.ANONYMOUS
    assert not is_allowed(principal, permission)
    with pytest.raises(PermissionDeniedError, match=permission.value):
        check_permission(principal, permission)


def test_forged_operator_on_remote_address_is_denied() -> None:
    forged = Principal(kind=PrincipalKind.LOCAL_OPERATOR, client_host="198.51.100.7")
    assert not any(is_allowed(forged, p) for p in Permission)
    no_host = Principal(kind=PrincipalKind.LOCAL_OPERATOR, client_host=None)
    assert not any(is_allowed(no_host, p) for p in Permission)


def test_unknown_permission_is_denied_even_to_the_operator() -> None:
    operator = principal_for_client("127.0.0.1")
    assert not is_allowed(operator, "footage:recording:delete")
    assert not is_allowed(operator, "")
    with pytest.raises(PermissionDeniedError):
        check_permission(operator, "disclosure:request:approve")


def test_grant_table_only_names_known_kinds_and_permissions() -> None:
    assert set(GRANTS) == set(PrincipalKind)
    assert GRANTS[PrincipalKind.ANONYMOUS] == frozenset()
    for granted in GRANTS.values():
        assert all(isinstance(p, Permission) for p in granted)
