"""Roles, the deny-by-default grant table and per-camera access (DESIGN.md "The people who
use it")."""

from __future__ import annotations

import pytest

from homewarden.domain.permissions import (
    ANONYMOUS_GRANTS,
    GRANTS,
    STAFF_ROLES,
    TOKEN_EXCLUDED,
    CameraAccess,
    Permission,
    Principal,
    PrincipalKind,
    Role,
    SupportGrant,
    camera_access,
    check_permission,
    held_permissions,
    is_allowed,
    is_loopback,
    visible_cameras,
)
from homewarden.errors import NotFoundError, PermissionDeniedError

NOW = 1_700_000_000.0
FOOTAGE = {
    Permission.FOOTAGE_CLIP_DOWNLOAD,
    Permission.FOOTAGE_LIVE_VIEW,
    Permission.FOOTAGE_RECORDING_READ,
    Permission.FOOTAGE_SNAPSHOT_READ,
}


def user(role: Role, household: str | None = "home", **kw: object) -> Principal:
    return Principal(
        PrincipalKind.USER,
        "192.0.2.7",
        user_id=7,
        username="u",
        role=role,
        household=None if role.is_staff else household,
        **kw,  # type: ignore[arg-type]
    )


OPERATOR = Principal(PrincipalKind.LOCAL_OPERATOR, "cli:root")


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
        ("::ffff:192.0.2.1", False),
        ("0.0.0.0", False),
        ("localhost", False),  # names are never trusted; the transport gives addresses
        ("testclient", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_grant_table_covers_every_role_and_only_known_permissions() -> None:
    assert set(GRANTS) == set(Role)
    for granted in GRANTS.values():
        assert all(isinstance(p, Permission) for p in granted)


@pytest.mark.parametrize(
    ("role", "allowed", "denied"),
    [
        (
            Role.OWNER,
            FOOTAGE
            | {
                Permission.ACCOUNTS_USER_MANAGE,
                Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE,
                Permission.AUDIT_ACCESS_LOG_READ,
                Permission.CAMERAS_CAMERA_MANAGE,
                Permission.NOTIFY_WEBHOOK_MANAGE,
                Permission.NOTIFY_WEBHOOK_READ,
            },
            set(),
        ),
        (
            Role.MEMBER,
            FOOTAGE | {Permission.EVENTS_EVENT_READ, Permission.NOTIFY_PUSH_MANAGE},
            {
                Permission.ACCOUNTS_USER_MANAGE,
                Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE,
                Permission.AUDIT_ACCESS_LOG_READ,
                Permission.CAMERAS_CAMERA_MANAGE,
                Permission.NOTIFY_WEBHOOK_MANAGE,
                Permission.NOTIFY_WEBHOOK_READ,
                Permission.SYSTEM_HEALTH_READ,
            },
        ),
        (
            Role.SUPPORT,
            FOOTAGE | {Permission.ACCOUNTS_SELF_MANAGE},  # usable only under a support grant
            {
                Permission.ACCOUNTS_USER_MANAGE,
                Permission.AUDIT_ACCESS_LOG_READ,
                Permission.CAMERAS_CAMERA_MANAGE,
                Permission.NOTIFY_PUSH_MANAGE,
                Permission.NOTIFY_WEBHOOK_MANAGE,
                Permission.NOTIFY_WEBHOOK_READ,
            },
        ),
        (
            Role.LEGAL_REVIEWER,
            {Permission.ACCOUNTS_SELF_MANAGE},
            FOOTAGE | {Permission.NOTIFY_WEBHOOK_MANAGE, Permission.NOTIFY_WEBHOOK_READ},
        ),
        (
            Role.CUSTODIAN,
            {Permission.ACCOUNTS_SELF_MANAGE},
            FOOTAGE | {Permission.NOTIFY_WEBHOOK_MANAGE, Permission.NOTIFY_WEBHOOK_READ},
        ),
    ],
)
def test_grant_table(role: Role, allowed: set[Permission], denied: set[Permission]) -> None:
    p = user(role)
    for perm in allowed:
        assert is_allowed(p, perm), perm
        check_permission(p, perm)
    for perm in denied:
        assert not is_allowed(p, perm), perm
        with pytest.raises(PermissionDeniedError, match=perm.value):
            check_permission(p, perm)


@pytest.mark.parametrize("permission", list(Permission))
def test_anonymous_holds_only_the_anonymous_grants(permission: Permission) -> None:
    anon = Principal.anonymous("203.0.113.5")
    assert is_allowed(anon, permission) is (permission in ANONYMOUS_GRANTS)
    # a loopback peer is no better
    assert is_allowed(Principal.anonymous("127.0.0.1"), permission) is (
        permission in ANONYMOUS_GRANTS
    )


def test_an_owners_api_token_reads_webhooks_but_cannot_manage_them() -> None:
    # A webhook is a lasting channel out of the home: a leaked token must not open one.
    token = Principal(
        PrincipalKind.USER, "192.0.2.7", user_id=7, role=Role.OWNER, household="home",
        via_token=True,
    )  # fmt: skip
    assert is_allowed(token, Permission.NOTIFY_WEBHOOK_READ)
    assert not is_allowed(token, Permission.NOTIFY_WEBHOOK_MANAGE)
    assert Permission.NOTIFY_WEBHOOK_MANAGE in TOKEN_EXCLUDED


def test_a_user_without_a_role_holds_only_what_anonymous_callers_hold() -> None:
    roleless = Principal(PrincipalKind.USER, "192.0.2.1", user_id=1)
    assert held_permissions(roleless) == ANONYMOUS_GRANTS


def test_operator_holds_what_an_owner_holds_and_unknown_permissions_nobody() -> None:
    assert held_permissions(OPERATOR) == held_permissions(user(Role.OWNER))
    assert not is_allowed(OPERATOR, "footage:recording:delete")
    assert not is_allowed(OPERATOR, "")
    with pytest.raises(PermissionDeniedError):
        check_permission(OPERATOR, "disclosure:request:approve")


def test_staff_roles() -> None:
    assert {r for r in Role if r.is_staff} == STAFF_ROLES
    assert not Role.OWNER.is_staff
    assert not Role.MEMBER.is_staff


# -- camera_access -----------------------------------------------------------------------


def test_owner_sees_every_camera_of_the_household_and_nothing_of_another() -> None:
    owner = user(Role.OWNER)
    assert camera_access(owner, "home", "front", NOW).ground is CameraAccess.OWNER
    with pytest.raises(NotFoundError, match="barn"):
        camera_access(owner, "farm", "barn", NOW)


def test_member_sees_granted_cameras_only() -> None:
    member = user(Role.MEMBER, cameras=frozenset({"porch"}))
    assert camera_access(member, "home", "porch", NOW).ground is CameraAccess.MEMBER_GRANT
    with pytest.raises(PermissionDeniedError, match="front"):
        camera_access(member, "home", "front", NOW)
    with pytest.raises(NotFoundError):  # a granted name in another household is still 404
        camera_access(member, "farm", "porch", NOW)
    no_grants = user(Role.MEMBER)
    with pytest.raises(PermissionDeniedError):
        camera_access(no_grants, "home", "porch", NOW)


def test_support_needs_a_grant_in_force_for_that_household() -> None:
    grant = SupportGrant(id=4, household="home", expires_at=NOW + 3600)
    staff = user(Role.SUPPORT, support_grants=(grant,))
    access = camera_access(staff, "home", "front", NOW)
    assert (access.ground, access.support_grant) == (CameraAccess.SUPPORT_GRANT, 4)
    with pytest.raises(PermissionDeniedError, match="support grant"):
        camera_access(staff, "farm", "barn", NOW)
    with pytest.raises(PermissionDeniedError):
        camera_access(staff, "home", "front", NOW + 3600)  # expired exactly at expires_at
    with pytest.raises(PermissionDeniedError):
        camera_access(user(Role.SUPPORT), "home", "front", NOW)


@pytest.mark.parametrize("role", [Role.LEGAL_REVIEWER, Role.CUSTODIAN])
def test_reviewers_and_custodians_see_no_footage(role: Role) -> None:
    grant = SupportGrant(id=1, household="home", expires_at=NOW + 60)
    with pytest.raises(PermissionDeniedError, match="fulfilled request"):
        camera_access(user(role, support_grants=(grant,)), "home", "front", NOW)


def test_anonymous_sees_nothing_and_the_operator_everything() -> None:
    with pytest.raises(NotFoundError):
        camera_access(Principal.anonymous("127.0.0.1"), "home", "front", NOW)
    assert camera_access(OPERATOR, "farm", "barn", NOW).ground is CameraAccess.LOCAL_OPERATOR


def test_visible_cameras() -> None:
    cams = {"front": "home", "porch": "home", "barn": "farm"}
    assert visible_cameras(user(Role.OWNER), cams, NOW) == {"front", "porch"}
    assert visible_cameras(user(Role.OWNER, household="farm"), cams, NOW) == {"barn"}
    member = user(Role.MEMBER, cameras=frozenset({"porch", "barn"}))
    assert visible_cameras(member, cams, NOW) == {"porch"}
    grant = SupportGrant(id=2, household="farm", expires_at=NOW + 10)
    staff = user(Role.SUPPORT, support_grants=(grant,))
    assert visible_cameras(staff, cams, NOW) == {"barn"}
    assert visible_cameras(staff, cams, NOW + 10) == frozenset()
    assert visible_cameras(user(Role.CUSTODIAN), cams, NOW) == frozenset()
    assert visible_cameras(Principal.anonymous(), cams, NOW) == frozenset()
    assert visible_cameras(OPERATOR, cams, NOW) == set(cams)
