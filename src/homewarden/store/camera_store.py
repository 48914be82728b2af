"""Camera settings managed in the app (table ``camera_settings``, migration 0004).

Rows in, plain records out; what the rows mean (a row for a config-file camera replaces it,
any other row is a camera added in the app) and who may write them is decided by
:mod:`homewarden.services.cameras`. Shares the :class:`~homewarden.store.index.Index`'s engine.
Times are UTC epoch seconds.

Errors: :class:`~homewarden.errors.DatabaseError` when the database fails;
:class:`~homewarden.errors.InvalidRequestError` for a household that does not exist.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from homewarden.store.index import Index, rowcount
from homewarden.store.models import CameraSettingsRow


@dataclass(frozen=True, slots=True)
class StoredCamera:
    """One row: ``settings`` are the fields of ``CameraSettings`` as JSON values."""

    name: str
    household: str
    settings: dict[str, Any]
    updated_at: float
    updated_by: int | None


def _record(row: CameraSettingsRow) -> StoredCamera:
    return StoredCamera(
        name=row.name,
        household=row.household_id,
        settings=copy.deepcopy(dict(row.settings)),
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


class CameraStore:
    """The ``camera_settings`` table of ``index``'s database (which must be migrated)."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def all(self) -> list[StoredCamera]:
        """Every stored camera, by name.

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction("read camera settings") as s:
            rows = s.scalars(select(CameraSettingsRow).order_by(CameraSettingsRow.name))
            return [_record(r) for r in rows]

    def get(self, name: str) -> StoredCamera | None:
        """The stored camera ``name``, or None.

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction(f"read camera {name}") as s:
            row = s.get(CameraSettingsRow, name)
            return None if row is None else _record(row)

    def put(
        self,
        name: str,
        household: str,
        settings: dict[str, Any],
        *,
        now: float,
        by: int | None,
    ) -> StoredCamera:
        """Insert or replace the row of camera ``name``.

        Raises:
            InvalidRequestError: ``household`` does not exist (foreign key).
            DatabaseError: the database failed.
        """
        with self._index.transaction(f"save camera {name}") as s:
            row = s.get(CameraSettingsRow, name)
            if row is None:
                row = CameraSettingsRow(name=name)
                s.add(row)
            row.household_id = household
            row.settings = copy.deepcopy(settings)
            row.updated_at = now
            row.updated_by = by
            s.flush()
            return _record(row)

    def delete(self, name: str) -> bool:
        """Delete the row of camera ``name``; True if there was one.

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction(f"delete camera {name}") as s:
            result = s.execute(delete(CameraSettingsRow).where(CameraSettingsRow.name == name))
            return rowcount(result) > 0
