"""Roles, permissions and the deny-by-default decisions about them. Pure.

Permissions are spelled ``scope:resource:action`` and kept sorted, after pypi/warehouse
(``warehouse/authnz/_permissions.py``). Who holds which permission is one table,
:data:`GRANTS`, keyed by :class:`Role`, consulted by :func:`is_allowed`; anything the table
does not grant is denied (warehouse's ``utils/security_policy.py`` habit). Anonymous callers
hold only :data:`ANONYMOUS_GRANTS` (the login page, static assets, the public report).

Holding a footage permission is necessary, not sufficient: which cameras a caller may see is
a second, per-resource decision, :func:`camera_access` (DESIGN.md "The people who use it"):

- an owner sees every camera of their household;
- a member sees only the cameras the owner granted them;
- staff support sees a household's cameras only while an owner-made support grant lasts;
- legal reviewers and custodians see no footage here (only a fulfilled request's package);
- nobody sees across households: a camera of another household is "not found", so that ids
  and names of other households cannot be probed.

``LOCAL_OPERATOR`` is the person at the machine's own shell (the CLI); the web layer never
makes one from a network peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from homewarden.errors import NotFoundError, PermissionDeniedError


class Permission(StrEnum):
    """Every permission a route or use-case can declare: ``scope:resource:action``, sorted."""

    ACCOUNTS_CREDENTIAL_MANAGE = "accounts:credential:manage"
    ACCOUNTS_REQUESTER_SIGNUP = "accounts:requester:signup"
    ACCOUNTS_SELF_MANAGE = "accounts:self:manage"
    ACCOUNTS_SESSION_CREATE = "accounts:session:create"
    ACCOUNTS_SUPPORT_GRANT_MANAGE = "accounts:support-grant:manage"
    ACCOUNTS_USER_MANAGE = "accounts:user:manage"
    AUDIT_ACCESS_LOG_READ = "audit:access-log:read"
    CAMERAS_CAMERA_MANAGE = "cameras:camera:manage"
    CAMERAS_CAMERA_READ = "cameras:camera:read"
    CAMERAS_STATUS_READ = "cameras:status:read"
    DISCLOSURE_AGENCY_MANAGE = "disclosure:agency:manage"
    DISCLOSURE_NOTICE_READ = "disclosure:notice:read"
    DISCLOSURE_PACKAGE_DOWNLOAD = "disclosure:package:download"
    DISCLOSURE_POLICY_MANAGE = "disclosure:policy:manage"
    DISCLOSURE_REQUEST_ANSWER = "disclosure:request:answer"
    DISCLOSURE_REQUEST_FILE = "disclosure:request:file"
    DISCLOSURE_REQUEST_READ = "disclosure:request:read"
    DISCLOSURE_REQUEST_REVIEW = "disclosure:request:review"
    EVENTS_EVENT_READ = "events:event:read"
    FOOTAGE_CLIP_DOWNLOAD = "footage:clip:download"
    FOOTAGE_LIVE_VIEW = "footage:live:view"
    FOOTAGE_RECORDING_READ = "footage:recording:read"
    FOOTAGE_SNAPSHOT_READ = "footage:snapshot:read"
    KEYS_ESCROW_SHARE_ENTER = "keys:escrow-share:enter"
    KEYS_HOUSEHOLD_MANAGE = "keys:household:manage"
    NOTIFY_PUSH_MANAGE = "notify:push:manage"
    NOTIFY_WEBHOOK_MANAGE = "notify:webhook:manage"
    NOTIFY_WEBHOOK_READ = "notify:webhook:read"
    SYSTEM_HEALTH_READ = "system:health:read"
    SYSTEM_METRICS_READ = "system:metrics:read"
    SYSTEM_OPENAPI_READ = "system:openapi:read"
    SYSTEM_PUBLIC_READ = "system:public:read"


class Role(StrEnum):
    """A user's role (DESIGN.md "The people who use it")."""

    OWNER = "owner"
    MEMBER = "member"
    SUPPORT = "support"
    LEGAL_REVIEWER = "legal_reviewer"
    CUSTODIAN = "custodian"
    REQUESTER = "requester"

    @property
    def is_staff(self) -> bool:
        """Staff of the deployment (not of a household): support, legal reviewer, custodian."""
        return self in STAFF_ROLES

    @property
    def in_household(self) -> bool:
        """Owner and member belong to a household; staff and requesters to none."""
        return self in (Role.OWNER, Role.MEMBER)

    @property
    def needs_totp(self) -> bool:
        """Staff and requesters must sign in with TOTP (issue: requesters "must use TOTP")."""
        return self.is_staff or self is Role.REQUESTER


#: Roles that belong to the deployment, not to a household; they must use TOTP.
STAFF_ROLES = frozenset({Role.SUPPORT, Role.LEGAL_REVIEWER, Role.CUSTODIAN})


class PrincipalKind(StrEnum):
    """Who is asking."""

    ANONYMOUS = "anonymous"
    USER = "user"
    LOCAL_OPERATOR = "local_operator"


@dataclass(frozen=True, slots=True)
class SupportGrant:
    """An owner's time-limited grant letting staff support see a household's footage.

    ``expires_at``: UTC epoch seconds; the grant is in force while ``now < expires_at``.
    """

    id: int
    household: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a route or use-case.

    Attributes:
        kind: anonymous, a signed-in user, or the local operator (CLI).
        client_host: the peer address as the transport saw it (an IP literal), or None.
        user_id, username, role: the account (None unless ``kind`` is USER).
        household: the user's household id (None for staff).
        cameras: for a member, the camera names the owner granted; None for other roles.
        support_grants: for staff support, the grants in force when the principal was built.
        via_token: True when authenticated by an API token rather than a session cookie.
    """

    kind: PrincipalKind
    client_host: str | None = None
    user_id: int | None = None
    username: str | None = None
    role: Role | None = None
    household: str | None = None
    cameras: frozenset[str] | None = None
    support_grants: tuple[SupportGrant, ...] = ()
    via_token: bool = False

    @classmethod
    def anonymous(cls, client_host: str | None = None) -> Principal:
        """A caller that presented no (valid) credentials."""
        return cls(PrincipalKind.ANONYMOUS, client_host)


_VIEWER = frozenset(
    {
        Permission.ACCOUNTS_CREDENTIAL_MANAGE,
        Permission.ACCOUNTS_SELF_MANAGE,
        Permission.CAMERAS_CAMERA_READ,
        Permission.CAMERAS_STATUS_READ,
        Permission.EVENTS_EVENT_READ,
        Permission.FOOTAGE_CLIP_DOWNLOAD,
        Permission.FOOTAGE_LIVE_VIEW,
        Permission.FOOTAGE_RECORDING_READ,
        Permission.FOOTAGE_SNAPSHOT_READ,
        Permission.NOTIFY_PUSH_MANAGE,
        Permission.SYSTEM_OPENAPI_READ,
    }
)
_STAFF = frozenset(
    {
        Permission.ACCOUNTS_CREDENTIAL_MANAGE,
        Permission.ACCOUNTS_SELF_MANAGE,
        Permission.SYSTEM_HEALTH_READ,
        Permission.SYSTEM_OPENAPI_READ,
    }
)

#: What anyone may do, signed in or not.
ANONYMOUS_GRANTS = frozenset(
    {
        Permission.ACCOUNTS_REQUESTER_SIGNUP,
        Permission.ACCOUNTS_SESSION_CREATE,
        Permission.SYSTEM_PUBLIC_READ,
    }
)
#: Disclosure review: legal reviewers and custodians (DESIGN.md: one approval each).
_REVIEW = frozenset(
    {
        Permission.DISCLOSURE_AGENCY_MANAGE,
        Permission.DISCLOSURE_NOTICE_READ,
        Permission.DISCLOSURE_REQUEST_READ,
        Permission.DISCLOSURE_REQUEST_REVIEW,
    }
)

#: Deny-by-default grant table. A permission added to :class:`Permission` is held by nobody
#: until it is written here on purpose. Footage permissions of support are usable only under
#: a support grant (:func:`camera_access`).
GRANTS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: _VIEWER
    | {
        Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE,
        Permission.ACCOUNTS_USER_MANAGE,
        Permission.AUDIT_ACCESS_LOG_READ,
        Permission.CAMERAS_CAMERA_MANAGE,
        Permission.DISCLOSURE_NOTICE_READ,
        Permission.DISCLOSURE_POLICY_MANAGE,
        Permission.DISCLOSURE_REQUEST_ANSWER,
        Permission.DISCLOSURE_REQUEST_READ,
        Permission.KEYS_HOUSEHOLD_MANAGE,
        Permission.NOTIFY_WEBHOOK_MANAGE,
        Permission.NOTIFY_WEBHOOK_READ,
        Permission.SYSTEM_HEALTH_READ,
        Permission.SYSTEM_METRICS_READ,
    },
    Role.MEMBER: _VIEWER,
    Role.SUPPORT: _STAFF
    | {
        Permission.CAMERAS_CAMERA_READ,
        Permission.CAMERAS_STATUS_READ,
        Permission.EVENTS_EVENT_READ,
        Permission.FOOTAGE_CLIP_DOWNLOAD,
        Permission.FOOTAGE_LIVE_VIEW,
        Permission.FOOTAGE_RECORDING_READ,
        Permission.FOOTAGE_SNAPSHOT_READ,
    },
    Role.LEGAL_REVIEWER: _STAFF | _REVIEW,
    Role.CUSTODIAN: _STAFF | _REVIEW | {Permission.KEYS_ESCROW_SHARE_ENTER},
    Role.REQUESTER: frozenset(
        {
            Permission.ACCOUNTS_CREDENTIAL_MANAGE,
            Permission.ACCOUNTS_SELF_MANAGE,
            Permission.DISCLOSURE_NOTICE_READ,
            Permission.DISCLOSURE_PACKAGE_DOWNLOAD,
            Permission.DISCLOSURE_REQUEST_FILE,
            Permission.DISCLOSURE_REQUEST_READ,
            Permission.SYSTEM_OPENAPI_READ,
        }
    ),
}

#: What an API token never holds, whatever its account's role: managing credentials (tokens,
#: password, TOTP), accounts and grants. A stolen token must not mint lasting access (a new
#: token, a new owner) that outlives its own revocation; scripts read and watch footage.
#: Nor does it answer, review or set policy for disclosure requests: a decision that lets
#: footage leave the home is taken by a person signed in with their second factor. Nor does
#: it add, change or remove webhooks: a webhook is a lasting channel out of the home (events
#: and request notices) that would outlive the token's revocation; a token may read them.
#: Nor does it manage household keys: grants, revocations, the recovery code and the escrow
#: switch need the owner's unlocked keys, which only a password login unlocks. Nor does it
#: enter a custodian's escrow share: that takes the custodian signed in with their TOTP.
TOKEN_EXCLUDED = frozenset(
    {
        Permission.ACCOUNTS_CREDENTIAL_MANAGE,
        Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE,
        Permission.ACCOUNTS_USER_MANAGE,
        Permission.DISCLOSURE_AGENCY_MANAGE,
        Permission.DISCLOSURE_POLICY_MANAGE,
        Permission.DISCLOSURE_REQUEST_ANSWER,
        Permission.DISCLOSURE_REQUEST_REVIEW,
        Permission.KEYS_ESCROW_SHARE_ENTER,
        Permission.KEYS_HOUSEHOLD_MANAGE,
        Permission.NOTIFY_WEBHOOK_MANAGE,
    }
)

#: The local operator at the machine's shell may do what an owner may.
LOCAL_OPERATOR_GRANTS = GRANTS[Role.OWNER]


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


def held_permissions(principal: Principal) -> frozenset[Permission]:
    """Every permission ``principal`` holds (deny by default)."""
    held = set(ANONYMOUS_GRANTS)
    if principal.kind is PrincipalKind.USER and principal.role is not None:
        held |= GRANTS.get(principal.role, frozenset())
        if principal.via_token:
            held -= TOKEN_EXCLUDED
    elif principal.kind is PrincipalKind.LOCAL_OPERATOR:
        held |= LOCAL_OPERATOR_GRANTS
    return frozenset(held)


def is_allowed(principal: Principal, permission: Permission | str) -> bool:
    """Whether ``principal`` holds ``permission``: a known :class:`Permission` that its role
    (or :data:`ANONYMOUS_GRANTS`) grants, less :data:`TOKEN_EXCLUDED` for an API token. A user
    principal without a role holds only what anonymous callers hold."""
    try:
        perm = Permission(permission)
    except ValueError:
        return False
    return perm in held_permissions(principal)


def check_permission(principal: Principal, permission: Permission | str) -> None:
    """Raise unless ``principal`` holds ``permission`` (see :func:`is_allowed`).

    Raises:
        PermissionDeniedError: the permission is not held; the message names it.
    """
    if not is_allowed(principal, permission):
        who = principal.role or principal.kind
        raise PermissionDeniedError(f"{permission} is not granted to {who} callers")


class CameraAccess(StrEnum):
    """On what ground a principal may see a camera (written into audit entries)."""

    OWNER = "owner"
    MEMBER_GRANT = "member_grant"
    SUPPORT_GRANT = "support_grant"
    LOCAL_OPERATOR = "local_operator"


@dataclass(frozen=True, slots=True)
class Access:
    """The ground for seeing one camera; ``support_grant`` is the grant id when used."""

    ground: CameraAccess
    support_grant: int | None = None


def camera_access(principal: Principal, household: str, camera: str, now: float) -> Access:
    """Decide whether ``principal`` may see footage of ``camera`` of ``household`` at ``now``
    (UTC epoch seconds). See the module docstring for the rules.

    Raises:
        NotFoundError: the camera belongs to another household than the caller's (so other
            households cannot be probed), or the caller is anonymous.
        PermissionDeniedError: a member without a grant for the camera; staff support without
            a support grant in force; legal reviewers and custodians.
    """
    if principal.kind is PrincipalKind.LOCAL_OPERATOR:
        return Access(CameraAccess.LOCAL_OPERATOR)
    if principal.kind is not PrincipalKind.USER or principal.role is None:
        raise NotFoundError(f"no camera {camera!r}")
    role = principal.role
    if role is Role.SUPPORT:
        for grant in principal.support_grants:
            if grant.household == household and now < grant.expires_at:
                return Access(CameraAccess.SUPPORT_GRANT, grant.id)
        raise PermissionDeniedError(
            f"staff support sees footage of household {household!r} only under a support "
            "grant from its owner, and none is in force"
        )
    if role is Role.REQUESTER:
        raise NotFoundError(f"no camera {camera!r}")
    if role.is_staff:
        raise PermissionDeniedError(f"{role} staff see no footage outside a fulfilled request")
    if principal.household != household:
        raise NotFoundError(f"no camera {camera!r}")
    if role is Role.OWNER:
        return Access(CameraAccess.OWNER)
    if principal.cameras is not None and camera in principal.cameras:
        return Access(CameraAccess.MEMBER_GRANT)
    raise PermissionDeniedError(f"the owner has not granted you camera {camera!r}")


def visible_cameras(
    principal: Principal, camera_households: Mapping[str, str], now: float
) -> frozenset[str]:
    """The cameras of ``camera_households`` (camera name -> household id) that ``principal``
    may see at ``now`` (see :func:`camera_access`)."""
    seen: set[str] = set()
    for camera, household in camera_households.items():
        try:
            camera_access(principal, household, camera, now)
        except (NotFoundError, PermissionDeniedError):
            continue
        seen.add(camera)
    return frozenset(seen)
