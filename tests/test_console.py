"""The web console: served by the API app, in a real browser (Debian's chromium driven by
Playwright), on the real database and broker; its pages' security and catalogue checked
without one too."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail.api.app import create_app
from coldtrail.api.erp_routes import verify_all
from coldtrail.clock import ManualClock
from coldtrail.console import i18n
from coldtrail.erp import conformance
from coldtrail.erp.people import Role, create_user
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from tests.conftest import QA_PASSWORD, T0, RunningApi, api_config, publish
from tests.test_api import _validation_run
from tests.test_record import shipped  # noqa: F401 - the fixture: SH1 with a held lot

ADMIN_PASSWORD = "admin-password-123"  # tests.conftest.api_config's bootstrap account

CHROMIUM = shutil.which("chromium")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium (.ci/run installs it) drives the browser tests"
)
TEMPLATES = i18n.TEMPLATES
# Where screenshots go, when they are wanted (COLDTRAIL_SCREENSHOTS=dir keeps them).
SHOTS = os.environ.get("COLDTRAIL_SCREENSHOTS")


@dataclass
class Site:
    url: str
    db_url: str
    hold: int
    mqtt: MqttOptions
    root: str
    shots: Path
    contexts: list[Any] = field(default_factory=list)
    """The browser contexts opened on it: closed before the API stops, so it need not wait
    out the grace it gives open push streams."""


@pytest.fixture
def site(
    shipped: dict[str, Any],  # noqa: F811
    db_url: str,
    clock: ManualClock,
    mqtt_options: MqttOptions,
    topic_root: str,
    tmp_path: Path,
) -> Iterator[Site]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_user(conn, "audi1", "Ada Auditor", Role.AUDITOR, QA_PASSWORD)
        # Two people sign a release of this product.
        conn.execute("UPDATE temperature_profiles SET release_signatures = 2")
        # The rules worker's conformance checks of yesterday and today (the trend's rows).
        for days in (1, 0):
            conformance.record(conn, clock.now() - timedelta(days=days))
        _validation_run(conn)  # a kept validation pack, run 1
    shots = Path(SHOTS) if SHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    app = create_app(api_config(db_url, mqtt_options, topic_root), clock)
    with RunningApi(app) as running:
        opened = Site(running.url, db_url, shipped["hold"], mqtt_options, topic_root, shots)
        yield opened
        for context in opened.contexts:
            context.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _page(browser: Any, site: Site, lang: str = "en") -> Any:
    context = browser.new_context(
        base_url=site.url, locale="zh-CN" if lang == "zh" else "en-US",
        timezone_id="Asia/Shanghai", viewport={"width": 1280, "height": 900},
    )  # fmt: skip
    site.contexts.append(context)
    return context.new_page()


def _login(page: Any, user: str, password: str = QA_PASSWORD) -> None:
    page.goto("/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("form.login button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()


def _shot(page: Any, site: Site, name: str) -> None:
    """A page's picture, kept where COLDTRAIL_SCREENSHOTS names (a folder nobody reads is
    not worth the seconds a full-page picture takes)."""
    if SHOTS:
        page.screenshot(path=str(site.shots / f"{name}.png"), full_page=True)


def _logout(page: Any) -> None:
    page.click("form.who button[type=submit]")
    page.wait_for_url(re.compile(r".*/login$"))


@needs_browser
def test_logistics_sees_a_published_reading_on_the_live_board_within_2_s(
    browser: Any, site: Site
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, site)
    _login(page, "logi1")
    assert page.url.endswith("/board")
    expect(page.locator("#feed")).to_have_attribute("data-state", "live", timeout=10_000)
    row = page.locator('tr[data-sensor="S2"]')
    expect(row.locator(".t")).not_to_have_text("6.7 °C")
    late = Reading(sensor="S2", seq=9001, ts=T0 + timedelta(hours=5), temperature_c=6.66,
                   humidity_pct=41.0)  # fmt: skip
    publish(site.mqtt, telemetry_topic(site.root, "s1", "gw"), encode_telemetry("gw", T0, [late]))
    expect(row.locator(".t")).to_have_text("6.7 °C", timeout=2_000)
    expect(row.locator(".rh")).to_have_text("41 %")
    _shot(page, site, "board-en")


TYPED = "门已关好。正在复核"


@needs_browser
def test_a_new_alarm_appears_on_the_board_in_place_keeping_a_comment_being_typed(
    browser: Any, site: Site
) -> None:
    from playwright.sync_api import expect

    from coldtrail.rules import alarms
    from coldtrail.rules.conditions import Condition

    page = _page(browser, site)
    _login(page, "logi1")
    expect(page.locator("#feed")).to_have_attribute("data-state", "live", timeout=10_000)
    comment = page.locator("#alarms-section input[name=comment]").first
    comment.fill(TYPED)
    typed_in = comment.get_attribute("id")
    page.evaluate("window.notReloaded = true")
    message = "logger battery at 5 %: replace it"
    with psycopg.connect(site.db_url, autocommit=True) as conn:
        found = Condition("battery_low", "S2", "TC", T0 + timedelta(hours=3), None, message)
        alarm = alarms.upsert(conn, found, T0 + timedelta(hours=4))
    body = f'{{"type":"alarm.raised","subject":"alarm/{alarm}"}}'.encode()
    publish(site.mqtt, f"{site.root}/v1/events/alarm/raised", body)
    expect(page.locator("#alarms-section")).to_contain_text(message, timeout=5_000)
    assert page.evaluate("window.notReloaded") is True
    assert page.locator(f"#{typed_in}").input_value() == TYPED
    assert page.evaluate("document.activeElement.id") == typed_in
    expect(page.locator("#board-news")).to_contain_text("Active alarms")
    # The redrawn forms are the server's: acknowledging the new alarm works.
    page.fill(f"#ack-{alarm}", "battery ordered")
    page.click(f"#ack-{alarm} + button")
    page.wait_for_load_state()
    done = page.locator("#alarms-section")
    expect(done).to_contain_text("Acknowledged by logi1: battery ordered")
    _shot(page, site, "board-alarm-in-place-en")


@needs_browser
def test_qa_releases_a_lot_with_two_signatures_and_a_wrong_password_is_refused_and_audited(
    browser: Any, site: Site
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, site)
    _login(page, "qa1")
    assert page.url.endswith("/excursions")
    page.click("a[href='/excursions?show=all']")
    page.click("a[href='/excursions/1']")
    _shot(page, site, "excursion-en")

    def sign(password: str, reason: str) -> None:
        page.click("button.open-dialog")
        dialog = page.locator("dialog[open]")
        expect(dialog).to_be_visible()
        dialog.locator("input[value=release]").check()
        dialog.locator("input[name=password]").fill(password)
        dialog.locator("textarea[name=reason]").fill(reason)
        _shot(page, site, "signature-dialog-en")
        dialog.locator("button[type=submit]").click()
        page.wait_for_load_state()

    sign("not-my-password", "stability data cover 20 min at 12 °C")
    expect(page.locator("p.error")).to_contain_text("user id or password is wrong")
    with psycopg.connect(site.db_url) as conn:
        failed = conn.execute(
            "SELECT actor FROM audit_log WHERE action = 'signature_failed' AND record_id = %s",
            (str(site.hold),),
        ).fetchall()
    assert failed == [("qa1",)]
    page.goto("/excursions/1")
    sign(QA_PASSWORD, "stability data cover 20 min at 12 °C")
    # One of two signatures: the hold stays open, the signature shows.
    expect(page.locator("td", has_text="Quinn Auditt (qa1) approval")).to_be_visible()
    expect(page.locator("button.open-dialog")).to_be_visible()
    _logout(page)
    _login(page, "qa2")
    page.goto("/excursions/1")
    sign(QA_PASSWORD, "second signature: data reviewed")
    expect(page.locator("td", has_text="Mara Manager (qa2) approval")).to_be_visible()
    expect(page.get_by_role("cell", name="released", exact=True)).to_be_visible()
    expect(page.locator("button.open-dialog")).to_have_count(0)
    _shot(page, site, "excursion-released-en")
    with psycopg.connect(site.db_url) as conn:
        row = conn.execute("SELECT state::text FROM holds WHERE id = %s", (site.hold,)).fetchone()
    assert row == ("released",)


@needs_browser
def test_an_auditor_downloads_the_pdf_verifies_the_trail_and_can_write_nothing(
    browser: Any, site: Site
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, site)
    _login(page, "audi1")
    assert page.url.endswith("/records")
    page.click("a[href='/shipments/SH1']")
    expect(page.locator("h1")).to_contain_text("SH1")
    _shot(page, site, "record-en")
    with page.expect_download() as got:
        page.click("a[href$='format=pdf']")
    pdf = Path(got.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF")
    page.goto("/audit")
    _shot(page, site, "audit-en")
    page.click("text=Verify the trail and the readings")
    with psycopg.connect(site.db_url, autocommit=True) as conn:
        verdict = verify_all(conn)
    shown = page.locator("p.ok" if verdict.ok else "p.error")
    expect(shown).to_be_visible()
    _shot(page, site, "verify-en")

    # No write control is offered; a form posted anyway is refused, with or without a token.
    page.goto("/excursions/1")
    expect(page.locator("button.open-dialog")).to_have_count(0)
    page.goto("/board")
    expect(page.locator("form[action$='/acknowledge']")).to_have_count(0)
    form = {"disposition": "release", "username": "audi1", "password": QA_PASSWORD,
            "meaning": "approval", "reason": "forged"}  # fmt: skip
    forged = page.request.post(f"/holds/{site.hold}/disposition", form=form)
    assert forged.status == 403, forged.text()
    token = page.locator("form.who input[name=csrf]").input_value()
    as_auditor = page.request.post(f"/holds/{site.hold}/disposition", form={**form, "csrf": token})
    assert as_auditor.status == 403
    assert "role auditor may not do this" in as_auditor.text()
    # Through the API, a write needs the bearer header: the session cookie alone is no login.
    api = page.request.post("/api/v1/holds", data={"lot_id": 1, "reason": "forged"})
    assert api.status == 401


@needs_browser
def test_the_console_in_chinese_end_to_end(browser: Any, site: Site) -> None:
    from playwright.sync_api import expect

    page = _page(browser, site, "zh")
    page.goto("/login")
    expect(page.locator("h1")).to_have_text("登录")
    _login(page, "qa1")
    expect(page.locator("nav a[href='/board']")).to_have_text("实时监控")
    page.goto("/excursions?show=all")
    expect(page.locator("td", has_text="已结束")).to_be_visible()
    _shot(page, site, "excursions-zh")
    page.goto("/excursions/1")
    expect(page.locator("h2#lots-h")).to_have_text("涉及的批次")
    _shot(page, site, "excursion-zh")
    page.click("button.open-dialog")
    expect(page.locator("dialog[open] h3")).to_contain_text("电子签名")
    _shot(page, site, "signature-dialog-zh")
    page.keyboard.press("Escape")
    for path, name in (("/board", "board-zh"), ("/records", "records-zh"),
                       ("/shipments/SH1", "record-zh"), ("/audit", "audit-zh")):  # fmt: skip
        page.goto(path)
        _shot(page, site, name)
    # Switched to English, the same session reads in English; the choice is the person's:
    # signed in on another browser (one asking for Chinese), they read English there too.
    page.select_option("#language", "en")
    page.click("form.lang button[type=submit]")
    expect(page.locator("nav a[href='/board']")).to_have_text("Live board")
    other = _page(browser, site, "zh")
    _login(other, "qa1")
    expect(other.locator("nav a[href='/board']")).to_have_text("Live board")
    with psycopg.connect(site.db_url) as conn:
        kept = conn.execute("SELECT language FROM users WHERE username = 'qa1'").fetchone()
    assert kept == ("en",)


@needs_browser
def test_qa_takes_a_capa_through_every_step_with_evidence_and_a_signed_close(
    browser: Any, site: Site
) -> None:
    from playwright.sync_api import expect

    page = _page(browser, site)
    _login(page, "qa1")
    page.goto("/capa")
    _shot(page, site, "capa-board-en")
    page.click("a[href='/capa/1']")

    def step(**fields: str) -> None:
        for name, value in fields.items():
            page.fill(f"form.stack [name={name}]", value)
        page.click("form.stack button[type=submit]")
        page.wait_for_load_state()

    step(comment="looking at the compressor log")
    step(root_cause="compressor relay failed", comment="found")
    page.fill("#ad", "replace the relay on all trucks")
    page.fill("#ao", "logi1")
    page.click("text=Add action")
    page.fill("input[name=outcome]", "relays replaced on 4 trucks")
    page.click("form[action$='/complete'] button")
    page.set_input_files("#ev", files=[{"name": "冷机维修记录.pdf", "mimeType": "application/pdf",
                                         "buffer": b"%PDF-1.4 relay invoice"}])  # fmt: skip
    page.click("text=Upload evidence")
    expect(page.locator("a", has_text="冷机维修记录.pdf")).to_be_visible()
    step(comment="actions done")
    _shot(page, site, "capa-en")
    step(effectiveness="no excursion on the trucks for 30 days", password=QA_PASSWORD,
         reason="effective")  # fmt: skip
    with psycopg.connect(site.db_url) as conn:
        row = conn.execute(
            "SELECT c.state::text, (SELECT count(*) FROM capa_evidence e WHERE e.capa_id = c.id"
            "  AND e.filename = '冷机维修记录.pdf'),"
            " (SELECT count(*) FROM signatures s WHERE s.record_type = 'capa'"
            "  AND s.record_id = c.id) FROM capas c WHERE c.id = 1"
        ).fetchone()
    assert row == ("closed", 1, 1)


DESTROYER = "上海医疗废物处置中心（见证：qa2）"  # noqa: RUF001 - Chinese punctuation, as written


@needs_browser
def test_qa_sends_a_rejected_lot_to_destruction_from_quarantine_with_a_signature(
    browser: Any, site: Site
) -> None:
    from playwright.sync_api import expect

    from coldtrail.erp.holds import dispose, place_hold
    from coldtrail.erp.movements import record_movement
    from coldtrail.erp.products import register_lot
    from coldtrail.erp.signatures import Credentials
    from tests.conftest import GTIN

    with psycopg.connect(site.db_url, autocommit=True) as conn:
        lot = register_lot(conn, "logi1", GTIN, "R-9").id
        record_movement(conn, "logi1", lot, "receiving", 12, T0, to_location="QZ", party="Acme")
        hold = place_hold(conn, "qa1", lot, "frozen in transit", T0 + timedelta(minutes=5)).id
        dispose(conn, "qa1", hold, "reject", Credentials("qa1", QA_PASSWORD), "responsibility",
                "frozen: not usable", T0 + timedelta(minutes=6))  # fmt: skip
    page = _page(browser, site, "zh")
    _login(page, "qa1")
    page.goto(f"/lots/{lot}")
    page.click("button.open-dialog")
    dialog = page.locator("dialog[open]")
    dialog.locator("input[value=destruction]").check()
    dialog.locator("input[name=party]").fill(DESTROYER)
    dialog.locator("input[name=password]").fill(QA_PASSWORD)
    dialog.locator("textarea[name=reason]").fill("按规程销毁")
    _shot(page, site, "lot-exit-zh")
    dialog.locator("button[type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator("td", has_text="销毁")).to_be_visible()
    with psycopg.connect(site.db_url) as conn:
        row = conn.execute(
            "SELECT m.kind::text, m.quantity, m.party, s.signer FROM movements m"
            " JOIN signatures s ON s.record_type = 'movement' AND s.record_id = m.id"
            " WHERE m.lot_id = %s",
            (lot,),
        ).fetchone()
    assert row == ("destruction", 12, DESTROYER, "qa1")


PAGES = ("/board", "/excursions?show=all", "/excursions/1", "/records", "/shipments/SH1",
         "/audit", "/lots/1", "/capa", "/capa/1", "/kpi", "/admin", "/conformance",
         "/places/TRK?hours=6", "/validation", "/profiles", "/sensors", "/sensors/S3",
         "/goods")  # fmt: skip


@needs_browser
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_no_page_has_a_serious_or_critical_accessibility_violation(
    browser: Any, site: Site, lang: str
) -> None:
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    axe = Axe()
    page = _page(browser, site, lang)
    # The checker itself finds what it should: an image without a text is critical.
    page.set_content('<html lang="en"><title>t</title><main><img src="/x.png"></main></html>')
    assert [v.split(" ")[0] for v in _serious(axe.run(page).response)] == ["image-alt"]
    page.goto("/login")
    found = _serious(axe.run(page).response)
    _shot(page, site, f"{lang}-login")
    _login(page, "admin", ADMIN_PASSWORD)  # who sees every page
    for path in PAGES:
        page.goto(path)
        found += [f"{path}: {v}" for v in _serious(axe.run(page).response)]
        _shot(page, site, f"{lang}-{re.sub(r'[^A-Za-z0-9]+', '-', path).strip('-')}")
    assert found == []


def _serious(response: dict[str, Any]) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['nodes'][0]['target']}"
        for v in response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@needs_browser
def test_the_signature_dialog_works_from_the_keyboard_alone(browser: Any, site: Site) -> None:
    from playwright.sync_api import expect

    page = _page(browser, site)
    _login(page, "qa1")
    page.goto("/excursions/1")
    opener = page.locator("button.open-dialog")
    for _ in range(60):  # Tab through the page to the dialog's button
        page.keyboard.press("Tab")
        if opener.evaluate("b => b === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the signature button")
    page.keyboard.press("Enter")
    dialog = page.locator("dialog[open]")
    expect(dialog).to_be_visible()
    assert dialog.evaluate("d => d.contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(page.locator("dialog[open]")).to_have_count(0)
    assert opener.evaluate("b => b === document.activeElement")
    page.keyboard.press("Enter")
    page.keyboard.press("Space")  # focus starts on the first choice: release
    page.keyboard.press("Tab")  # the choices are one stop: on to the user name (filled in)
    page.keyboard.press("Tab")
    page.keyboard.type(QA_PASSWORD)
    page.keyboard.press("Tab")  # the meaning keeps "approval"
    page.keyboard.press("Tab")
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Sign
    page.wait_for_load_state()
    expect(page.locator("td", has_text="typed without a mouse")).to_be_visible()


# ------------------------------------------------------------------ without a browser


def test_every_page_refuses_inline_script_and_style_and_every_template_keeps_to_it(
    site: Site,
) -> None:
    import httpx2

    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\sstyle=|\son[a-z]+=|javascript:", text), template.name
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        start = http.get("/board")
        assert (start.status_code, start.headers["location"]) == (303, "/login?next=/board")
        login = http.get("/login")
        csp = login.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        # Without the form's token (a login posted from elsewhere): refused, a new form given.
        refused = http.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert refused.status_code == 403
        token = re.search(r'name="csrf" value="([^"]+)"', refused.text)
        assert token is not None
        done = http.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                         "csrf": token.group(1)})  # fmt: skip
        assert done.status_code == 303
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        for path in PAGES:
            page = http.get(path)
            assert page.status_code == 200, (path, page.text[:300])
            assert page.headers["content-security-policy"] == csp, path


def test_every_message_of_the_templates_and_pages_has_a_chinese_translation() -> None:
    from babel.messages.extract import extract_from_dir

    found = {
        (msg if isinstance(msg, str) else msg[0])
        for _, _, msg, _, _ in extract_from_dir(
            str(TEMPLATES.parent),
            method_map=[("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")],
            options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}},
        )
    }
    assert len(found) > 100
    zh = i18n.translations("zh")
    missing = sorted(m for m in found if zh.gettext(m) == m)
    assert missing == []
    codes = sorted(
        f"{context}:{code}"
        for context, values in i18n.CODES.items()
        for code in values
        if zh.pgettext(context, code) == code
    )
    assert codes == []


def _signed_in(http: Any, user: str, password: str) -> str:
    """Signs ``http`` in through the login form; the CSRF token of its session's forms."""
    form = http.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    done = http.post("/login", data={"username": user, "password": password,
                                     "csrf": token.group(1)})  # fmt: skip
    assert done.status_code == 303, done.text
    page = http.get("/excursions")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def test_an_admin_adds_a_person_and_a_contact_and_marks_a_quarantine_area_and_no_one_else_can(
    site: Site,
) -> None:
    import httpx2

    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "admin", ADMIN_PASSWORD)
        person = {"username": "wang.li", "full_name": "王丽", "role": "qa",
                  "password": "correct-horse-battery-staple", "csrf": csrf}  # fmt: skip
        assert http.post("/admin/users", data=person).status_code == 303
        hook = "https://sms.example.cn/send?token=S3cr3t-T0ken&to=138"
        contact = {"name": "值班经理", "channel": "webhook", "target": hook, "csrf": csrf}
        assert http.post("/admin/contacts", data=contact).status_code == 303
        # A range sent along is not the admin page's to change: only the area is kept.
        place = {"temp_max_c": "12", "alarm_delay_s": "600", "quarantine_area": "true",
                 "csrf": csrf}  # fmt: skip
        assert http.post("/admin/locations/CR", data=place).status_code == 303
        shown = http.get("/admin").text
        assert "王丽" in shown
        assert "值班经理" in shown
        assert "S3cr3t-T0ken" not in shown  # the contact's secret stays out of the page
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute(
            "SELECT temp_max_c, alarm_delay_s, quarantine_area FROM locations WHERE id = 'CR'"
        ).fetchone() == (8.0, 300, True)  # as the fixture set them
        assert conn.execute(
            "SELECT role::text FROM users WHERE username = 'wang.li'"
        ).fetchone() == ("qa",)
    # QA may not: the page is refused, and so is the form, with a valid token of their own.
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        page = http.get("/admin")
        assert page.status_code == 403
        assert "role qa may not do this" in page.text
        refused = http.post("/admin/users", data={**person, "username": "mallory", "csrf": csrf})
        assert refused.status_code == 403


def test_a_form_field_out_of_its_bounds_is_a_console_page_naming_it_not_the_apis_json(
    site: Site,
) -> None:
    import httpx2

    secret = "a-password-nobody-may-see-" + "x" * 1100
    with httpx2.Client(base_url=site.url, follow_redirects=False,
                       headers={"Accept-Language": "en"}) as http:  # fmt: skip
        csrf = _signed_in(http, "admin", ADMIN_PASSWORD)
        contact = {"name": "Night", "channel": "webhook", "target": "https://x.example/h",
                   "level": "11", "after_min": "10000000000000", "csrf": csrf}  # fmt: skip
        page = http.post("/admin/contacts", data=contact)
        assert page.status_code == 422
        assert page.headers["content-type"].startswith("text/html")
        assert "level: Input should be less than or equal to 10" in page.text
        assert "after_min: Input should be less than or equal to 10080" in page.text
        assert 'href="/admin"' in page.text  # the signed-in person's page, with its menu
        person = {"username": "bob", "full_name": "Bob", "role": "qa", "password": secret,
                  "csrf": csrf}  # fmt: skip
        page = http.post("/admin/users", data=person)
        assert page.status_code == 422
        assert "password: String should have at most 1024 characters" in page.text
        assert "a-password-nobody-may-see" not in page.text
        hours = http.get("/places/TRK?hours=many")
        assert hours.status_code == 422
        assert "hours: Input should be a valid integer" in hours.text
        # The API answers as it always did.
        api = http.get("/api/v1/audit?limit=0")
        assert api.headers["content-type"] == "application/json"


def test_an_auditor_reads_a_places_record_for_the_days_named_in_the_sites_zone(
    site: Site,
) -> None:
    import httpx2

    with httpx2.Client(base_url=site.url, follow_redirects=False,
                       headers={"Accept-Language": "en"}) as http:  # fmt: skip
        _signed_in(http, "audi1", QA_PASSWORD)
        page = http.get("/places/TC?since=2026-11-22&until=2026-11-22")
        assert page.status_code == 200, page.text
        # From the day's start in Shanghai to now (22:00 there): the day is not over.
        assert "2026-11-22 00:00:00 +08:00 — 2026-11-22 22:00:00 +08:00" in page.text
        assert "from=2026-11-21T16:00:00Z&amp;to=2026-11-22T14:00:00Z" in page.text
        csv = http.get("/api/v1/locations/TC/record?from=2026-11-21T16:00:00Z"
                       "&to=2026-11-22T14:00:00Z&format=csv")  # fmt: skip
        assert (csv.status_code, csv.headers["content-type"][:8]) == (200, "text/csv")
        assert 'href="/excursions/1"' in page.text  # the day's excursion is in it
        for query, status, message in (
            ("since=2026-11-23&until=2026-11-22", 409, "its end after its start"),
            ("since=2025-01-01&until=2026-11-22", 409, "at most 400 days"),
            ("since=2026-13-01", 422, "a day is written 2026-03-01"),
            ("until=2026-11-22", 422, "a period names its first day"),
        ):
            refused = http.get(f"/places/TC?{query}")
            assert (refused.status_code, message in refused.text) == (status, True), query
        assert http.get("/places/NOPE?since=2026-11-22").status_code == 404


def test_qa_adds_a_storage_profile_and_a_product_under_it_and_an_auditor_can_not(
    site: Site,
) -> None:
    import httpx2

    profile = {"profile_id": "15-25", "name": "常温 15-25 °C", "temp_min_c": "15",
               "temp_max_c": "25", "alarm_delay_s": "900", "stability_budget_min": "",
               "release_signatures": "2"}  # fmt: skip
    product = {"gtin": "06901234567892", "name": "阿莫西林胶囊", "profile_id": "15-25",
               "serialised": "true"}  # fmt: skip
    with httpx2.Client(base_url=site.url, follow_redirects=False,
                       headers={"Accept-Language": "en"}) as http:  # fmt: skip
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        for path, form in (("/profiles", profile), ("/products", product)):
            done = http.post(path, data={**form, "csrf": csrf})
            assert done.status_code == 303, (path, done.text)
        for path, change, message in (
            ("/profiles", {}, "profile 15-25 exists already"),
            ("/profiles", {"profile_id": "x y"}, "id is 1 to 64 letters, digits"),
            ("/profiles", {"profile_id": "P2", "temp_max_c": "nan"}, "temp_max_c"),
            ("/profiles", {"profile_id": "P2", "alarm_delay_s": "1e400"}, "alarm_delay_s"),
            ("/profiles", {"profile_id": "P2", "temp_min_c": "-1000"}, "temp_min_c"),
            ("/products", {}, "product 06901234567892 exists already"),
            ("/products", {"gtin": "123"}, "a GTIN here has 14 digits"),
            ("/products", {"gtin": "06901234567885", "profile_id": "NOPE"}, "NOPE"),
        ):
            form = {**(profile if path == "/profiles" else product), **change, "csrf": csrf}
            refused = http.post(path, data=form)
            assert refused.status_code in (404, 409), (change, refused.text)
            assert message in refused.text, (change, refused.text)
        page = http.get("/profiles").text
        assert "常温 15-25 °C" in page
        assert "阿莫西林胶囊" in page
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "audi1", QA_PASSWORD)
        assert 'action="/profiles"' not in http.get("/profiles").text
        forged = {**profile, "profile_id": "P9", "csrf": csrf}
        assert http.post("/profiles", data=forged).status_code == 403
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute(
            "SELECT temp_min_c, temp_max_c, alarm_delay_s, release_signatures FROM"
            " temperature_profiles WHERE id = '15-25'"
        ).fetchone() == (15.0, 25.0, 900, 2)
        assert conn.execute(
            "SELECT profile_id, serialised FROM products WHERE gtin = '06901234567892'"
        ).fetchone() == ("15-25", True)
        assert conn.execute("SELECT count(*) FROM temperature_profiles WHERE id = 'P2'"
                            ).fetchone() == (0,)  # fmt: skip


def test_a_chinese_board_says_the_rules_alarms_in_chinese_from_their_numbers(site: Site) -> None:
    import httpx2

    from coldtrail.rules import texts

    assert set(texts.ZH) == set(i18n.CODES["alarm"])
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        _signed_in(http, "logi1", QA_PASSWORD)
        zh = http.get("/board", headers={"Accept-Language": "zh-CN"}).text
        en = http.get("/board", headers={"Accept-Language": "en"}).text
    # The fixture's alarms, each raised by the real rules engine.
    for said in (
        "TC 温度超出范围：12.0..12.0 °C（允许 2..8 °C），自 11-22 19:00:00 起（延迟发现）",  # noqa: RUF001
        "记录仪自 11-22 20:20:00 起无响应",
        "31 分钟无记录，最长允许 5 分钟",  # noqa: RUF001
        "温度变化 6.6 °C/分钟（超过 1 °C/分钟）：门是否未关好？",  # noqa: RUF001
    ):
        assert said in zh, said
    assert "TC out of range: 12.0..12.0 °C (allowed 2..8 °C)" in en
    assert "温度超出范围" not in en
    # An alarm raised before its detail held the numbers keeps the rules' English.
    with psycopg.connect(site.db_url, autocommit=True) as conn:
        conn.execute("UPDATE alarms SET detail = '{}' WHERE kind = 'rapid_change'")
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        _signed_in(http, "logi1", QA_PASSWORD)
        zh = http.get("/board", headers={"Accept-Language": "zh-CN"}).text
    assert "temperature changing 6.6 °C/min (over 1 °C/min): door open?" in zh
    assert "31 分钟无记录" in zh


def test_an_admin_moves_and_disables_a_gateway_and_is_told_the_broker_was_not(
    site: Site,
) -> None:
    import httpx2

    from coldtrail.erp import gateways
    from coldtrail.erp.masterdata import upsert_site

    with psycopg.connect(site.db_url, autocommit=True) as conn:
        upsert_site(conn, "s2", "上海二号库", "Asia/Shanghai")
        gateways.register(conn, "gw-7", "s1", "冷库网关")
    with httpx2.Client(base_url=site.url, follow_redirects=False,
                       headers={"Accept-Language": "en"}) as http:  # fmt: skip
        csrf = _signed_in(http, "admin", ADMIN_PASSWORD)
        assert 'action="/admin/gateways/gw-7"' in http.get("/admin").text
        for gateway, form, status, message in (
            ("gw-7", {"site": "no such"}, 409, "site: String should match pattern"),
            ("gw-7", {"site": "nope"}, 409, "no site &#39;nope&#39;"),
            ("gw-0", {"site": "s2"}, 404, "no gateway"),
        ):
            refused = http.post(f"/admin/gateways/{gateway}", data={**form, "csrf": csrf})
            assert (refused.status_code, message in refused.text) == (status, True), refused.text
        moved = http.post("/admin/gateways/gw-7",
                          data={"site": "s2", "disabled": "true", "csrf": csrf})  # fmt: skip
        # This API has no broker admin account: recorded, and the page says the broker wasn't.
        assert moved.status_code == 200
        assert "gw-7: not told: the API has no broker admin account" in moved.text
        again = http.post("/admin/gateways/gw-7",
                          data={"site": "s2", "disabled": "true", "csrf": csrf})  # fmt: skip
        assert again.status_code == 303  # nothing changed: nothing to tell
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute("SELECT site_id, disabled FROM gateways WHERE id = 'gw-7'"
                            ).fetchone() == ("s2", True)  # fmt: skip
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        forged = http.post("/admin/gateways/gw-7", data={"site": "s1", "csrf": csrf})
        assert forged.status_code == 403


def test_qa_changes_a_places_delay_as_a_signed_change_and_an_admin_can_not(site: Site) -> None:
    import httpx2

    change = {"temp_min_c": "2", "temp_max_c": "8", "alarm_delay_s": "600",
              "meaning": "approval", "reason": "复核后延迟改为10分钟"}  # fmt: skip
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "admin", ADMIN_PASSWORD)
        refused = http.post("/places/CR/limits", data={
            **change, "username": "admin", "password": ADMIN_PASSWORD, "csrf": csrf})  # fmt: skip
        assert refused.status_code == 403
        assert "role admin may not sign" in refused.text
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        signed = {**change, "username": "qa1", "password": QA_PASSWORD, "csrf": csrf}
        bad = http.post("/places/CR/limits", data={**signed, "temp_max_c": "nan"})
        assert bad.status_code == 409
        assert "not a temperature" in bad.text
        assert http.post("/places/CR/limits", data=signed).status_code == 303
        page = http.get("/places/CR").text
        assert "复核后延迟改为10分钟" in page
        assert "Quinn Auditt (qa1)" in page
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute("SELECT alarm_delay_s FROM locations WHERE id = 'CR'").fetchone() == (
            600,
        )
        assert conn.execute(
            "SELECT changed_by, after->>'alarm_delay_s' FROM changes"
        ).fetchall() == [("qa1", "600")]


def test_the_audit_trail_is_filtered_by_user_and_by_days_in_the_sites_zone(site: Site) -> None:
    import httpx2

    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        _signed_in(http, "audi1", QA_PASSWORD)
        everyone = http.get("/audit").text
        mine = http.get("/audit", params={"actor": "audi1"}).text
        assert "<td>system:rules</td>" in everyone
        assert "<td>system:rules</td>" not in mine
        assert "<td>audi1</td>" in mine  # their own sign-in
        # Newest first, each time in the site's zone (UTC+8) with its offset.
        rows = re.findall(
            r"<tr><td>(\d+)</td><td>(\d{4}-\d\d-\d\d) [0-9:.]+ \+08:00</td>", everyone
        )
        ids = [int(i) for i, _ in rows]
        assert ids == sorted(ids, reverse=True)
        assert len(ids) > 10
        # The trail's times are the database's own: the days its rows fall on, there.
        first = min(date.fromisoformat(d) for _, d in rows)
        before = (first - timedelta(days=1)).isoformat()
        assert http.get("/audit", params={"until": before}).text.count("<tr><td>") == 0
        since = http.get("/audit", params={"since": first.isoformat()}).text
        assert since.count("<tr><td>") == len(ids)
        assert http.get("/audit", params={"since": "22/11/2026"}).status_code == 422


@pytest.mark.parametrize("quantity", ["NaN", "Infinity", "-3", "0", "1e400", "一二"])
def test_goods_out_refuses_a_quantity_that_is_not_a_finite_positive_number(
    site: Site, quantity: str
) -> None:
    import httpx2

    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        form = {"kind": "return_to_supplier", "quantity": quantity, "from_location": "CR",
                "party": "Acme", "username": "qa1", "password": QA_PASSWORD,
                "meaning": "approval", "reason": "recall", "csrf": csrf}  # fmt: skip
        refused = http.post("/lots/1/exit", data=form)
    assert refused.status_code == 409
    assert "not a quantity" in refused.text
    with psycopg.connect(site.db_url) as conn:
        gone = conn.execute(
            "SELECT count(*) FROM movements WHERE kind::text = 'return_to_supplier'"
        ).fetchone()
    assert gone == (0,)


def test_the_conformance_page_shows_each_kind_of_finding_day_by_day(site: Site) -> None:
    import httpx2

    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        _signed_in(http, "audi1", QA_PASSWORD)
        page = http.get("/conformance").text
    assert "最近14天" in page  # the auditor reads Chinese (the default)
    row = re.search(r"<tr><td>s1</td><td>alarm_contacts</td>(.*?)</tr>", page)
    assert row is not None
    counts = re.findall(r"<td>([^<]*)</td>", row.group(1))
    assert len(counts) == 14
    assert counts[-2:] == ["1", "1"]  # yesterday's check and today's
    assert set(counts[:-2]) == {"·"}  # no check kept before: no count shown


def test_qa_signs_a_validation_pack_for_execution_then_another_for_review(site: Site) -> None:
    import httpx2

    sign = {"role": "execution", "reason": "ran it after the upgrade"}
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        _signed_in(http, "audi1", QA_PASSWORD)
        page = http.get("/validation").text
        assert "open-dialog" not in page  # an auditor reads, signs nothing
        assert 'href="/api/v1/validation/1?format=pdf"' in page
        assert http.get("/api/v1/validation/1", params={"format": "pdf"}).content[:5] == b"%PDF-"
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        # A change since the last validation that passed (none did): the page lists it.
        limits = {"temp_min_c": "2", "temp_max_c": "7.5", "alarm_delay_s": "300",
                  "meaning": "approval", "reason": "重新验证后收紧上限",
                  "username": "qa1", "password": QA_PASSWORD, "csrf": csrf}  # fmt: skip
        assert http.post("/places/CR/limits", data=limits).status_code == 303
        assert "重新验证后收紧上限" in http.get("/validation").text
        done = http.post("/validation/1/sign", data={
            **sign, "username": "qa1", "password": QA_PASSWORD, "csrf": csrf})  # fmt: skip
        assert done.status_code == 303
        own = http.post("/validation/1/sign", data={
            **sign, "role": "review", "username": "qa1", "password": QA_PASSWORD,
            "csrf": csrf})  # fmt: skip
        assert own.status_code == 409  # the executor does not review their own run
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "qa2", QA_PASSWORD)
        done = http.post("/validation/1/sign", data={
            "role": "review", "reason": "reviewed", "username": "qa2", "password": QA_PASSWORD,
            "csrf": csrf})  # fmt: skip
        assert done.status_code == 303
        page = http.get("/validation").text
    assert "Quinn Auditt (qa1)" in page
    assert "Mara Manager (qa2)" in page
    assert "open-dialog" not in page  # both signed: nothing left to sign


def test_qa_changes_a_profiles_delay_and_a_products_profile_signed_and_an_admin_can_not(
    site: Site,
) -> None:
    import httpx2

    with psycopg.connect(site.db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO temperature_profiles (id, name, temp_min_c, temp_max_c)"
                     " VALUES ('15-25', 'Room temperature', 15, 25)")  # fmt: skip
        gtin = conn.execute("SELECT gtin FROM products LIMIT 1").fetchone()[0]  # type: ignore[index]
    sign = {"meaning": "approval", "reason": "供应商稳定性数据更新"}
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "admin", ADMIN_PASSWORD)
        refused = http.post("/profiles/2-8/limits", data={
            **sign, "alarm_delay_s": "60", "username": "admin", "password": ADMIN_PASSWORD,
            "csrf": csrf})  # fmt: skip
        assert refused.status_code == 403
    with httpx2.Client(base_url=site.url, follow_redirects=False) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        me = {**sign, "username": "qa1", "password": QA_PASSWORD, "csrf": csrf}
        assert "open-dialog" in http.get("/profiles").text
        done = http.post("/profiles/2-8/limits", data={
            **me, "temp_min_c": "2", "temp_max_c": "8", "alarm_delay_s": "60"})  # fmt: skip
        assert done.status_code == 303
        moved = http.post(f"/products/{gtin}/profile", data={**me, "profile_id": "15-25"})
        assert moved.status_code == 303
        page = http.get("/profiles").text
    assert page.count("供应商稳定性数据更新") == 2
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute("SELECT subject, changed_by FROM changes ORDER BY id").fetchall() == [
            ("temperature_profile", "qa1"),
            ("product", "qa1"),
        ]
