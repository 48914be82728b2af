"""Issue 4 acceptance through the browser: disclosure requests driven in Debian's Chromium
(Playwright) against a real recorder and web app (real footage over real RTSP, see
``conftest.py``), with the runtime's own disclosure scheduler running.

The accounts the browser is not the point of are made through the services in the fixture:
a legal reviewer and a custodian (TOTP), an agency on the allow-list, and a verified
requester of it (password and TOTP). Every decision is then taken in the browser, each
person signed in through ``/login`` and ``/login/totp``:

1. A consent request filed by camera id is declined by the owner in their inbox; the
   requester's page shows ``declined`` and nothing is released.
2. The owner sets the policy page to refuse emergencies; the requester's emergency is
   ``rejected``, naming the policy.
3. An emergency over 6 h is capped to 2 h at filing; two approvals without a call-back
   release nothing; the call-back to the agency's registered number (prefilled from the
   agency record) releases it, the owner is notified (their inbox shows the notice), and the
   requester downloads the package through a link shown once.
4. Sign-up with an address outside the agency's mail domains is refused on the page.

Screenshots go to ``artifacts/e2e/disclosure-*.png``. All tests share one recorder and run
on one xdist worker, in file order.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from homewarden.domain.permissions import Role
from homewarden.errors import NotFoundError
from homewarden.services.disclosure import DisclosureService
from homewarden.store.disclosure_store import AgencyRecord
from tests.e2e.conftest import (
    E2EApp,
    E2EUser,
    _enrol_totp,
    login,
    new_context,
    screenshot,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

AGENCY_PHONE = "+1 555 0100 200"
AGENCY_DOMAIN = "pd.example.gov"
HOUR = 3600.0


@dataclass
class Disclosure:
    """The deployment's disclosure side: its service, the agency, and the people."""

    app: E2EApp
    service: DisclosureService
    agency: AgencyRecord
    legal: E2EUser
    custodian: E2EUser
    requester: E2EUser


@pytest.fixture(scope="module")
def world(e2e_app: E2EApp) -> Disclosure:
    """Staff, an agency and a verified requester, made through the services."""
    runtime = e2e_app.runtime
    accounts = runtime.accounts
    service = runtime.app_context().disclosure
    assert service is not None, "the runtime runs a disclosure service"

    def staff(username: str, role: Role, password: str) -> E2EUser:
        user = accounts.add_user(username, role, None, actor=None, password=password).user
        return E2EUser(username, password, user.id, _enrol_totp(runtime, user.id))

    legal = staff("lena", Role.LEGAL_REVIEWER, "legal-e2e-passphrase-4")
    custodian = staff("carl", Role.CUSTODIAN, "custodian-e2e-passphrase-5")
    agency = service.add_agency(
        accounts.principal_of(accounts.user(legal.user_id)),
        "Metro Police Department",
        "Metro County",
        [AGENCY_DOMAIN],
        AGENCY_PHONE,
    )
    password = "requester-e2e-passphrase-6"
    officer = accounts.add_user("officer", Role.REQUESTER, None, actor=None, password=password).user
    service.store.add_requester(officer.id, agency.id, f"officer@{AGENCY_DOMAIN}", time.time())
    requester = E2EUser("officer", password, officer.id, _enrol_totp(runtime, officer.id))
    assert service.requester_problem(officer.id) is None
    return Disclosure(e2e_app, service, agency, legal, custodian, requester)


def _signed_in(browser: Browser, world: Disclosure, user: E2EUser) -> Iterator[BrowserContext]:
    context = new_context(browser, world.app)
    page = context.new_page()
    try:
        login(page, user)
        page.close()
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def requester_context(browser: Browser, world: Disclosure) -> Iterator[BrowserContext]:
    """The requester signed in with password and TOTP, for the module."""
    yield from _signed_in(browser, world, world.requester)


@pytest.fixture(scope="module")
def legal_context(browser: Browser, world: Disclosure) -> Iterator[BrowserContext]:
    """The legal reviewer signed in with password and TOTP, for the module."""
    yield from _signed_in(browser, world, world.legal)


@pytest.fixture(scope="module")
def custodian_context(browser: Browser, world: Disclosure) -> Iterator[BrowserContext]:
    """The custodian signed in with password and TOTP, for the module."""
    yield from _signed_in(browser, world, world.custodian)


def _local(ts: float) -> str:
    """``ts`` as a ``datetime-local`` value in UTC, as the pages read it."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _file(
    page: Page,
    kind: str,
    start: float,
    end: float,
    description: str,
    *,
    camera: str,
    cameras: str = "",
    attested: bool = False,
) -> str:
    """File a request through the requester's form; returns its id (from the page it
    lands on)."""
    page.goto("/requests")
    form = page.locator("[data-testid=file-form]")
    expect(form).to_be_visible()
    page.select_option("[data-testid=file-type]", kind)
    page.fill("[data-testid=file-camera]", camera)
    page.fill("[data-testid=file-cameras]", cameras)
    page.fill("[data-testid=file-start]", _local(start))
    page.fill("[data-testid=file-end]", _local(end))
    page.fill("[data-testid=file-description]", description)
    if attested:
        page.check("[data-testid=file-attested]")
    page.click("[data-testid=file-submit]")
    page.wait_for_url("**/requests/req-*")
    errors = page.locator("[data-testid=form-error]")
    assert errors.count() == 0, errors.first.inner_text()
    request_id = page.url.rsplit("/requests/", 1)[1].split("?", 1)[0]
    expect(page.locator("h1 code")).to_have_text(request_id)
    return request_id


def _state(page: Page) -> str:
    return page.locator("h1 [data-testid=request-state]").inner_text()


def _history(page: Page) -> list[tuple[str, str]]:
    """The request page's history as (action, to-state) pairs, in order."""
    rows = page.locator("[data-testid=history-row]")
    return [
        (rows.nth(i).get_attribute("data-action") or "", rows.nth(i).get_attribute("data-to") or "")
        for i in range(rows.count())
    ]


def _set_emergency_policy(page: Page, allowed: bool) -> None:
    page.goto("/settings/policy")
    page.check(f"[data-testid=policy-emergency-{'allowed' if allowed else 'refused'}]")
    page.click("[data-testid=policy-save]")
    page.wait_for_url("**/settings/policy?done=policy")
    expect(page.locator("[data-testid=done]")).to_be_visible()


# --------------------------------------------------------------------------------------------


def test_owner_declines_a_consent_request(
    world: Disclosure, requester_context: BrowserContext, owner_context: BrowserContext
) -> None:
    requester = requester_context.new_page()
    owner = owner_context.new_page()
    try:
        now = time.time()
        request_id = _file(
            requester,
            "consent",
            now - HOUR,
            now - 60,
            "A parcel was taken from the porch; may we see the porch camera?",
            camera=world.app.camera,
        )
        assert _state(requester) == "awaiting_owner"
        screenshot(requester, "disclosure-1-filed")

        # The owner (signed in with TOTP by the owner_context fixture) finds it in the inbox.
        owner.goto("/requests")
        row = owner.locator(f"[data-testid=request-row][data-request={request_id}]")
        expect(row).to_be_visible()
        expect(row.locator("[data-testid=request-state]")).to_have_text("awaiting_owner")
        row.locator("[data-testid=request-link]").click()
        owner.wait_for_url(f"**/requests/{request_id}")
        expect(owner.locator("[data-testid=grant-submit]")).to_be_visible()
        owner.fill("[data-testid=decline-reason]", "not without a warrant")
        owner.click("[data-testid=decline-submit]")
        owner.wait_for_url(f"**/requests/{request_id}?done=answered")
        assert _state(owner) == "declined"
        expect(owner.locator("[data-testid=actions]")).to_have_count(0)
        screenshot(owner, "disclosure-1-owner-declined")

        # The requester sees it declined, with the owner's reason, and nothing to download.
        requester.goto("/requests")
        mine = requester.locator(f"[data-testid=request-row][data-request={request_id}]")
        expect(mine.locator("[data-testid=request-state]")).to_have_text("declined")
        requester.goto(f"/requests/{request_id}")
        assert _state(requester) == "declined"
        assert ("owner_decline", "declined") in _history(requester)
        expect(requester.locator("[data-testid=history]")).to_contain_text("not without a warrant")
        expect(requester.locator("[data-testid=release]")).to_have_text("none")
        expect(requester.locator("[data-testid=link-submit]")).to_have_count(0)
        screenshot(requester, "disclosure-1-requester-sees-declined")
        stored = world.service.store.request(request_id)
        assert stored.state == "declined"
        assert stored.package is None
        assert stored.data["release"] == "none"
    finally:
        requester.close()
        owner.close()


def test_policy_refusing_emergencies_rejects_one_naming_the_policy(
    world: Disclosure, requester_context: BrowserContext, owner_context: BrowserContext
) -> None:
    owner = owner_context.new_page()
    requester = requester_context.new_page()
    try:
        _set_emergency_policy(owner, allowed=False)
        expect(owner.locator("[data-testid=policy-summary]")).to_contain_text(
            "refuses all emergency disclosure"
        )
        expect(owner.locator("[data-testid=policy-emergency-refused]")).to_be_checked()
        screenshot(owner, "disclosure-2-policy-refuses")

        now = time.time()
        request_id = _file(
            requester,
            "emergency",
            now - HOUR,
            now - 60,
            "A missing child was last seen near this house an hour ago.",
            camera=world.app.camera,
            cameras=world.app.camera,
            attested=True,
        )
        assert _state(requester) == "rejected"
        expect(requester.locator("[data-testid=reject-code]")).to_have_text(
            "policy refuses emergency"
        )
        expect(requester.locator("[data-testid=history]")).to_contain_text(
            "the household's policy refuses all emergency disclosure"
        )
        assert ("reject", "rejected") in _history(requester)
        screenshot(requester, "disclosure-2-emergency-refused")
        stored = world.service.store.request(request_id)
        assert stored.state == "rejected"
        assert stored.data["release"] == "none"
    finally:
        owner.close()
        requester.close()


def test_emergency_capped_two_approvals_and_callback_then_owner_told(
    world: Disclosure,
    requester_context: BrowserContext,
    owner_context: BrowserContext,
    legal_context: BrowserContext,
    custodian_context: BrowserContext,
    tmp_path: Path,
) -> None:
    owner = owner_context.new_page()
    requester = requester_context.new_page()
    legal = legal_context.new_page()
    custodian = custodian_context.new_page()
    try:
        _set_emergency_policy(owner, allowed=True)
        expect(owner.locator("[data-testid=policy-summary]")).to_contain_text("at most 2 h")

        # Filed over 6 h: the page shows the scope capped to the last 2 h of it.
        end = float(int(time.time()) - 5)
        request_id = _file(
            requester,
            "emergency",
            end - 6 * HOUR,
            end,
            "Armed man threatening a resident at the front door; the porch camera may "
            "show where he went.",
            camera=world.app.camera,
            cameras=world.app.camera,
            attested=True,
        )
        assert _state(requester) == "under_review"
        window = requester.locator("[data-testid=scope-window]")
        assert float(window.get_attribute("data-end") or 0) == end
        assert float(window.get_attribute("data-start") or 0) == end - 2 * HOUR
        expect(requester.locator("[data-testid=scope-span]")).to_have_text("2 h")
        expect(requester.locator("[data-testid=original-scope]")).to_contain_text("(6 h)")
        assert ("narrow", "requester_verified") in _history(requester)
        expect(requester.locator("[data-testid=history]")).to_contain_text(
            "window capped from 6 h to the last 2 h"
        )
        screenshot(requester, "disclosure-3-capped")

        # The legal reviewer keeps the agency's registered number, finds the request in the
        # queue and approves.
        legal.goto("/staff/agencies")
        agency = legal.locator(f"[data-testid=agency-row][data-agency='{world.agency.id}']")
        expect(agency.locator("[data-testid=agency-phone]")).to_have_value(AGENCY_PHONE)
        legal.goto("/requests")
        queued = legal.locator(
            f"[data-testid=review-queue] [data-testid=request-row][data-request={request_id}]"
        )
        expect(queued).to_be_visible()
        queued.locator("[data-testid=request-link]").click()
        legal.wait_for_url(f"**/requests/{request_id}")
        legal.fill("[data-testid=approve-reason]", "credible threat to life, narrow scope")
        legal.click("[data-testid=approve-submit]")
        legal.wait_for_url(f"**/requests/{request_id}?done=step")
        expect(legal.locator("[data-testid=approve-submit]")).to_have_count(0)  # not twice

        # The custodian approves too: two approvers, but no call-back yet -> nothing leaves.
        custodian.goto(f"/requests/{request_id}")
        custodian.fill("[data-testid=approve-reason]", "second approval")
        custodian.click("[data-testid=approve-submit]")
        custodian.wait_for_url(f"**/requests/{request_id}?done=step")
        assert _state(custodian) == "under_review"
        expect(custodian.locator("[data-testid=release]")).to_have_text("none")
        expect(custodian.locator("[data-testid=approvals]")).to_contain_text("legal reviewer")
        expect(custodian.locator("[data-testid=approvals]")).to_contain_text("custodian")

        # A number other than the agency's registered one is refused, with the reason.
        number = custodian.locator("[data-testid=callback-number]")
        expect(number).to_have_value(world.agency.callback_phone)
        number.fill("+1 555 0199 999")
        custodian.check("[data-testid=callback-confirmed]")
        custodian.fill("[data-testid=callback-note]", "number from the request")
        with custodian.expect_response(f"**/requests/{request_id}/review") as refused:
            custodian.click("[data-testid=callback-submit]")
        assert refused.value.status == 400
        expect(custodian.locator("[data-testid=form-error]")).to_contain_text(
            "agency's registered number"
        )
        assert _state(custodian) == "under_review"

        # The call-back to the registered number (prefilled from the agency record).
        expect(custodian.locator("[data-testid=callback-number]")).to_have_value(AGENCY_PHONE)
        custodian.check("[data-testid=callback-confirmed]")
        custodian.fill("[data-testid=callback-note]", "Sgt. Diaz at the desk confirmed it")
        custodian.click("[data-testid=callback-submit]")
        custodian.wait_for_url(f"**/requests/{request_id}?done=step")
        steps = _history(custodian)
        assert ("approve_emergency", "approved") in steps
        assert ("notify_owner", "owner_notified") in steps
        assert _state(custodian) in ("owner_notified", "fulfilled")
        expect(custodian.locator("[data-testid=callback]")).to_contain_text(
            f"called {AGENCY_PHONE}"
        )
        expect(custodian.locator("[data-testid=owner-notice]")).to_have_text("sent")
        screenshot(custodian, "disclosure-3-approved")

        # The owner's inbox shows the notice and the request.
        owner.goto("/requests")
        notice = owner.locator(f"[data-testid=notice-row][data-request={request_id}]")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("emergency")
        expect(
            owner.locator(f"[data-testid=request-row][data-request={request_id}]")
        ).to_be_visible()
        screenshot(owner, "disclosure-3-owner-inbox")

        # The scheduler packages it; the requester gets a link (shown once) and downloads.
        wait_for(
            "the runtime's scheduler to fulfil the request",
            lambda: world.service.store.request(request_id).state == "fulfilled",
            60,
        )
        requester.goto(f"/requests/{request_id}")
        assert _state(requester) == "fulfilled"
        requester.click("[data-testid=link-submit]")
        link = requester.locator("[data-testid=download-link]")
        expect(link).to_be_visible()
        with requester.expect_download() as download:
            link.click()
        saved = tmp_path / "package.zip"
        download.value.save_as(saved)
        with zipfile.ZipFile(saved) as z:
            names = z.namelist()
        assert any(n.endswith("manifest.json") for n in names), names
        screenshot(requester, "disclosure-3-requester-download")
        requester.goto(f"/requests/{request_id}")
        expect(requester.locator("[data-testid=download-link]")).to_have_count(0)  # once
    finally:
        for page in (owner, requester, legal, custodian):
            page.close()


def test_signup_outside_the_agency_domains_is_refused(world: Disclosure, browser: Browser) -> None:
    context = new_context(browser, world.app)
    page = context.new_page()
    try:
        page.goto("/requesters/signup")
        page.select_option("[data-testid=signup-agency]", str(world.agency.id))
        page.fill("[data-testid=signup-email]", "someone@gmail.example.com")
        page.fill("[data-testid=signup-username]", "impostor")
        with page.expect_response("**/requesters/signup") as answer:
            page.click("[data-testid=signup-submit]")
        assert answer.value.status == 403
        expect(page.locator("[data-testid=form-error]")).to_contain_text(AGENCY_DOMAIN)
        screenshot(page, "disclosure-4-signup-refused")
        with pytest.raises(NotFoundError):
            world.app.runtime.accounts.user_by_name("impostor")
    finally:
        context.close()
