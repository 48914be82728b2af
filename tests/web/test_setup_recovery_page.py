"""The first-run setup page shows an owner the household recovery code made at setup, once
(issue 6: before, the code was only obtainable through an API call no page made, so an owner
set up through ``homewarden run`` never saw it). Real app, real accounts and household keys,
on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import attach
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER
from tests.web.helpers import PASSWORD, Clock, client, csrf, login, make_context

NEW_PASSWORD = "a new and long passphrase"
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_CODE = re.compile(r'data-testid="recovery-code">([^<]+)<')


def test_owner_setup_page_shows_the_recovery_code_once(
    index: Index, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, cameras={"front": {"url": "file:/dev/null"}}
    )
    clock = Clock(1_764_403_200.0)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, clock=clock)
        keys = attach(ctx.accounts, index, audit, settings.keys_dir, clock=clock,
                      params=ARGON2ID_FLOOR)  # fmt: skip
        ctx = dataclasses.replace(ctx, keys=keys)
        secret = ctx.accounts.bootstrap_owner("olive")  # what `homewarden run` does
        assert secret is not None
        app = create_app(ctx)
        c = client(app)
        page = c.get("/setup", params={"token": secret})
        assert page.status_code == 200
        found = _CSRF_FIELD.search(page.text)
        assert found is not None
        form = {"token": secret, "password": PASSWORD, "totp_secret": "", "code": "",
                "csrf_token": found.group(1)}  # fmt: skip
        done = c.post("/setup", data=form, follow_redirects=False)
        assert done.status_code == 200, done.text
        shown = _CODE.search(done.text)
        assert shown is not None
        code = shown.group(1).strip()
        assert len(code) == 39
        assert "shown this once" in done.text
        assert "only way back to your recorded footage" in done.text
        assert 'href="/login?done=setup"' in done.text
        assert code not in done.headers.get("location", "")
        assert done.headers["cache-control"] == "no-store"
        # a second view does not show it: the link is spent, the API has nothing waiting
        again = c.post("/setup", data=form, follow_redirects=False)
        assert again.status_code == 400
        assert code not in again.text
        owner = client(app)
        owner.headers[CSRF_HEADER] = login(owner, "olive")["csrf_token"]
        assert owner.post("/api/keys/recovery/setup-code").status_code == 404
        # the code shown is the household's: it resets a forgotten password with the keys
        anonymous = client(app)
        use = {"username": "olive", "recovery_code": code, "new_password": NEW_PASSWORD}
        used = anonymous.post(
            "/api/keys/recovery/use", json=use, headers={CSRF_HEADER: csrf(anonymous)}
        )
        assert used.status_code == 200, used.text
        assert used.json()["recovery_code"] != code
