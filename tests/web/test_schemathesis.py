"""Issue 3 acceptance: schemathesis against the app's own OpenAPI document: no 5xx.

The real app (in process, over ASGI) on real services: a migrated SQLite index holding real
footage (``bikes.mp4`` cut into segments, with events and gaps), the audit log, and an owner
calling with an API token (``Authorization: Bearer``), so every operation is reached with
authority and its inputs are what gets tested. Each operation gets a few examples (positive
and negative) from the schema's examples and from fuzzing, under a deadline per example; the
check is schemathesis' ``not_a_server_error``. Every operation is tried; all failures are
reported together.

Some operations change state (tokens, users, grants): before each example the owner is
re-enabled if an example disabled the account, and a fresh token is used, so a revoked token
cannot turn the rest of the run into 401s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation, BaseSchema

from homewarden.config import Settings
from homewarden.domain.audit import Actor, ActorKind
from homewarden.domain.permissions import TOKEN_EXCLUDED
from homewarden.services.audit import AuditLog
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import UserRecord
from homewarden.store.index import Index
from homewarden.web.app import OPENAPI_URL, create_app
from tests.web.conftest import FOOTAGE, T0, Footage
from tests.web.helpers import add_user, make_context

#: Examples per operation and phase, and the deadline of one example: bounded so the whole
#: module runs in well under a minute on two cores.
MAX_EXAMPLES = 6
DEADLINE = timedelta(seconds=5)

Operation = APIOperation[Any, Any, Any, Any]

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20251129,
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
        # The coverage phase makes every boundary combination (hundreds per operation) and
        # stateful links are not declared: examples and fuzzing only.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)


@dataclass
class ApiUnderTest:
    app: FastAPI
    ctx: AppContext
    owner: UserRecord


@pytest.fixture(scope="module")
def api_under_test(
    footage: Footage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiUnderTest]:
    """The app over an index with real footage, events and gaps; an owner account."""
    db_url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis-db') / 'homewarden.db'}"
    index = Index(db_url)
    index.migrate()
    try:
        for seg in footage.segments:
            index.add_segment(seg)
        gap = index.open_gap("front", T0 - 30.0, "unreachable", "connection refused")
        index.close_gap(gap, T0)
        first = index.open_event("front", T0 + 1.0, "motion", 0.2, ["porch"])
        index.update_event(first, end=T0 + 3.0, snapshot_path=footage.snapshot_rel)
        index.open_event("front", T0 + 6.0, "person", 0.5, [])
        cfg = Settings(
            data_dir=footage.data_dir,
            database_url=db_url,
            cameras={"front": {"url": f"file:{FOOTAGE}"}},
        )
        with AuditLog.open(db_url, cfg.keys_dir) as audit:
            ctx = make_context(index, cfg, audit)
            owner = add_user(ctx, "owner")
            yield ApiUnderTest(create_app(ctx), ctx, owner)
    finally:
        index.close()


@pytest.fixture(scope="module")
def api_schema(api_under_test: ApiUnderTest) -> BaseSchema:
    """The app's OpenAPI document, fetched from the app by the owner."""
    token, _ = api_under_test.ctx.accounts.create_token(api_under_test.owner.id, "schema")
    return schemathesis.openapi.from_asgi(
        OPENAPI_URL, api_under_test.app, config=CONFIG, headers={"Authorization": f"Bearer {token}"}
    )


def _operations(api_schema: BaseSchema) -> list[Operation]:
    """Every operation of the document; one the loader cannot read fails the test."""
    operations: list[Operation] = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), f"unreadable operation in the OpenAPI document: {result}"
        operations.append(result.ok())
    return operations


def _no_required(operation: Operation) -> bool:
    """Whether the operation takes no required parameter (so any call of it is valid)."""
    params = operation.definition.raw.get("parameters", [])
    return not any(p.get("required") for p in params)


def _owner_token(api: ApiUnderTest) -> str:
    accounts = api.ctx.accounts
    if accounts.user(api.owner.id).disabled:
        accounts.set_disabled(api.owner.id, False, actor=Actor(ActorKind.SYSTEM, "test"))
    token, _ = accounts.create_token(api.owner.id, "schemathesis")
    return token


def _check_operation(
    operation: Operation,
    mode: GenerationMode,
    api: ApiUnderTest,
    statuses: Counter[tuple[str, int]],
) -> str | None:
    """Run the examples of one operation in one mode, counting response statuses; the
    failure, or None. An operation with no invalid input (no parameters, or a free string)
    has no negative examples."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=DEADLINE,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case[Operation]) -> None:
        response = case.call(headers={"Authorization": f"Bearer {_owner_token(api)}"})
        statuses[operation.label, response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            return f"{operation.label}: no valid request could be generated"
    except Exception as exc:  # every failure is reported, the other operations still run
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def _token_excluded(op: Any) -> bool:
    """Whether the operation needs a permission API tokens never hold (account management)."""
    declared = set(op.definition.raw.get("x-permissions", []))
    return bool(declared & {str(p) for p in TOKEN_EXCLUDED})


# (schemathesis.pytest.from_fixture cannot be used: its lazy loader sets Function._nodeid,
# which pytest 9 no longer has, so each operation runs as a Hypothesis test from here.)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(
    mode: GenerationMode, api_schema: BaseSchema, api_under_test: ApiUnderTest
) -> None:
    operations = _operations(api_schema)
    statuses: Counter[tuple[str, int]] = Counter()
    failures = [
        f for op in operations if (f := _check_operation(op, mode, api_under_test, statuses))
    ]
    assert not failures, "\n\n".join(failures)
    # The run reached the app: requests were made, and an owner's valid reads were served.
    assert sum(statuses.values()) >= 2 * len(operations), statuses
    if mode is GenerationMode.POSITIVE:
        served = {label for (label, code), _ in statuses.items() if 200 <= code < 300}
        reads = {
            op.label
            for op in operations
            if op.method.upper() == "GET" and _no_required(op) and not _token_excluded(op)
        }
        assert reads <= served, f"valid reads never served: {sorted(reads - served)}"


def test_the_document_covers_the_api(api_schema: BaseSchema) -> None:
    # A schema that lost its operations would make the test above vacuous.
    paths = {op.path for op in _operations(api_schema)}
    for expected in (
        "/api/cameras",
        "/api/events",
        "/api/events/{event_id}/clip.mp4",
        "/api/cameras/{name}/clip.mp4",
    ):
        assert expected in paths
    assert len(paths) >= 15
