"""The console refuses every state-changing request without a login and its session's token."""

from __future__ import annotations

import pytest

from console.auth import SESSION_COOKIE, Forbidden, Session, SessionSigner, check_origin
from tests.console.conftest import PASSWORD, Console, csrf_of

#: Every POST that changes the line, with a valid form apart from the token.
ACTIONS = [
    ("/retrain", {"reason": "new supplier"}),
    ("/frames/f-ng/mark-good", {"line": "l1"}),
    ("/releases/activate", {"version": "v2"}),
    ("/releases/rollback", {}),
]


@pytest.mark.parametrize(("path", "form"), ACTIONS)
def test_an_action_without_a_login_is_refused(console, path, form):
    token = csrf_of(console.client.get("/login").text)  # a real, anonymous session's token
    response = console.client.post(path, data={**form, "csrf_token": token})
    assert response.status_code == 403
    assert "login required" in response.text
    assert console.planes.actions == []


@pytest.mark.parametrize(("path", "form"), ACTIONS)
@pytest.mark.parametrize("token", [None, "", "forged-token-0123456789abcdef0123456789"])
def test_a_logged_in_action_without_its_sessions_token_is_refused(console, path, form, token):
    assert console.login().status_code == 303
    data = dict(form) if token is None else {**form, "csrf_token": token}
    response = console.client.post(path, data=data)
    assert response.status_code == 403
    assert console.planes.actions == []


def test_a_token_of_another_session_is_refused():
    victim, attacker = Console(), Console()
    attacker.login()
    attackers_token = attacker.token()
    victim.login()
    response = victim.client.post("/retrain", data={"reason": "x", "csrf_token": attackers_token})
    assert response.status_code == 403
    assert victim.planes.actions == []


def test_a_cross_site_form_is_refused_even_with_the_right_token(console):
    console.login()
    token = console.token()
    response = console.client.post(
        "/retrain",
        data={"reason": "x", "csrf_token": token},
        headers={"origin": "http://evil.example"},
    )
    assert response.status_code == 403
    assert console.planes.actions == []


def test_a_logged_in_action_with_its_token_is_done(console):
    console.login()
    response = console.client.post(
        "/retrain",
        data={"reason": "new  supplier", "csrf_token": console.token()},
        headers={"origin": "http://testserver"},
    )
    assert response.status_code == 303
    assert console.planes.actions == [("retrain", "new supplier", "operator@console")]
    status = console.client.get(response.headers["location"])
    assert status.status_code == 200
    assert "queued" in status.text
    assert "Retrain requested" in status.text  # the notice, shown once


def test_mark_good_files_the_frame_and_shows_it(console):
    console.login()
    response = console.client.post(
        "/frames/f-ng/mark-good", data={"line": "l1", "csrf_token": console.token()}
    )
    assert response.status_code == 303
    assert console.planes.actions == [
        ("mark_good", "f-ng", "l1"),
        ("finding", "f-ng", "fine", "operator@console"),  # evidence for the line's threshold
    ]
    page = console.client.get("/").text
    assert "filed as a normal: normals/washer/2026-11-29/f-ng.png" in page


def test_an_unknown_release_is_reported_not_raised(console):
    console.login()
    response = console.client.post(
        "/releases/activate", data={"version": "v9", "csrf_token": console.token()}
    )
    assert response.status_code == 303
    assert "Not activated: no release &#39;v9&#39;" in console.client.get("/releases").text


@pytest.mark.parametrize(("user", "password"), [("operator", "wrong"), ("admin", PASSWORD)])
def test_a_wrong_user_or_password_is_refused(console, user, password):
    response = console.login(password=password, user=user)
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    # still not logged in: the pages send to the login, actions are refused
    assert console.client.get("/").status_code == 303
    token = csrf_of(console.client.get("/login").text)
    assert (
        console.client.post("/retrain", data={"reason": "x", "csrf_token": token}).status_code
        == 403
    )


def test_the_login_form_itself_needs_its_token(console):
    console.client.get("/login")
    response = console.client.post(
        "/login", data={"username": "operator", "password": PASSWORD, "csrf_token": "x" * 43}
    )
    assert response.status_code == 403
    assert console.client.get("/").status_code == 303


def test_a_tampered_cookie_is_not_a_login(console):
    console.login()
    value = console.client.cookies[SESSION_COOKIE]
    body, signature = value.split(".")
    forged = SessionSigner(b"another secret of 32 bytes......", 3600).dumps(
        Session(csrf="t" * 43, user="operator", issued=9e9)
    )
    for cookie in (f"{forged.split('.')[0]}.{signature}", forged):
        console.client.cookies.clear()
        console.client.cookies.set(SESSION_COOKIE, cookie)
        assert console.client.get("/").status_code == 303  # to the login page
        assert (
            console.client.post("/releases/rollback", data={"csrf_token": "t" * 43}).status_code
            == 403
        )
    assert console.planes.actions == []


def test_logging_in_draws_a_new_token(console):
    before = csrf_of(console.client.get("/login").text)
    console.login()
    assert console.token() != before
    response = console.client.post("/releases/rollback", data={"csrf_token": before})
    assert response.status_code == 403


def test_sessions_expire():
    signer = SessionSigner(b"k" * 32, max_age_s=60)
    value = signer.dumps(Session(csrf="c" * 43, user="operator", issued=1000.0))
    assert signer.loads(value, now=1059.0) is not None
    assert signer.loads(value, now=1061.0) is None


def test_pages_need_a_login_unless_the_read_only_view_is_on():
    closed = Console()
    assert closed.client.get("/").status_code == 303
    assert closed.client.get("/events").status_code == 403
    assert closed.client.get("/images/l1/2026-11-29/f-ng/heatmap").status_code == 403
    assert closed.client.get("/releases").headers["location"].startswith("/login")

    wall = Console(read_only_view=True)
    page = wall.client.get("/")
    assert page.status_code == 200
    assert "f-ng" in page.text and "This part was fine" not in page.text
    image = wall.client.get("/images/l1/2026-11-29/f-ng/heatmap")
    assert image.status_code == 200 and image.content == b"\x89PNG heatmap"
    token = csrf_of(wall.client.get("/login").text)
    assert (
        wall.client.post("/retrain", data={"reason": "x", "csrf_token": token}).status_code == 403
    )
    assert wall.planes.actions == []


def test_images_are_served_by_the_console_for_checked_names_only(console):
    console.login()
    original = console.client.get("/images/l1/2026-11-29/f-ng/original")
    assert original.status_code == 200
    assert original.headers["content-type"] == "image/jpeg"
    for path in (
        "/images/l1/2026-11-29/missing/heatmap",
        "/images/l1/not-a-day/f-ng/heatmap",
        "/images/l1/2026-11-29/f-ng/manifest",
        "/images/..%2Fmodels/2026-11-29/f-ng/heatmap",
    ):
        assert console.client.get(path).status_code == 404, path


def test_the_live_page_lists_the_verdict_with_a_button_carrying_the_token(console):
    console.login()
    page = console.client.get("/")
    assert page.status_code == 200
    assert 'id="v-f-ng"' in page.text and 'id="ng-f-ng"' in page.text
    assert "/images/l1/2026-11-29/f-ng/heatmap" in page.text
    assert csrf_of(page.text) == console.token()
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_an_untrusted_host_is_refused(console):
    assert console.client.get("/login", headers={"host": "rebound.example"}).status_code == 400


@pytest.mark.parametrize(
    ("origin", "referer", "allowed", "ok"),
    [
        ("http://console:8080", None, [], True),
        (None, "http://console:8080/releases", [], True),
        (None, None, [], True),  # not a browser: the token decides
        ("https://proxy.example", None, ["https://proxy.example"], True),
        ("http://evil.example", None, [], False),
        (None, "http://evil.example/x", [], False),
        ("null", None, [], False),
    ],
)
def test_the_origin_check(origin, referer, allowed, ok):
    if ok:
        check_origin(origin, referer, "console:8080", allowed)
    else:
        with pytest.raises(Forbidden):
            check_origin(origin, referer, "console:8080", allowed)


def test_the_releases_page_shows_each_gate_report_and_acts_on_the_others(console):
    from pathlib import Path

    from operations.releases import ReleaseEntry
    from schemas.manifest import ModelManifest

    stored = Path(__file__).parents[1] / "worker" / "data" / "release_v1_manifest.json"
    first = ModelManifest.model_validate_json(stored.read_text())
    gate = {"false_alarm_rate": 0.0125, "synthetic_auroc": 0.9312, "reasons": []}
    second = first.model_copy(update={"version": "v2", "metrics": {"gate": gate}})
    console.planes.entries = [ReleaseEntry(second, current=True), ReleaseEntry(first, False)]
    console.login()
    page = console.client.get("/releases").text
    assert "Gate report" in page and "false_alarm_rate" in page and "0.9312" in page
    assert f"Make {first.version} current" in page
    assert "Make v2 current" not in page  # the current one
    assert 'id="rollback"' in page


def test_a_control_plane_outage_is_a_notice_not_a_server_error(console):
    from console.plant import PlaneUnavailable

    def down(*_args, **_kwargs):
        raise PlaneUnavailable("Connection refused")

    console.login()
    token = console.token()
    console.planes.request_retrain = down
    console.planes.recent_retrains = down
    console.planes.releases = down
    response = console.client.post("/retrain", data={"reason": "x", "csrf_token": token})
    assert response.status_code == 303
    page = console.client.get("/retrain")
    assert page.status_code == 200
    assert "Not requested: Redis or S3 did not answer" in page.text
    assert "Retrain requests unavailable" in page.text
    assert "Releases unavailable" in console.client.get("/releases").text


def test_a_form_whose_only_field_is_the_token_is_done(console):
    """Rollback and logout carry nothing but the token, which the `Operator` dependency reads."""
    console.login()
    response = console.client.post("/releases/rollback", data={"csrf_token": console.token()})
    assert response.status_code == 303
    assert console.planes.actions == [("rollback",)]
    assert "Rolled back: release v1 is now current." in console.client.get("/releases").text
    response = console.client.post("/logout", data={"csrf_token": console.token()})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert console.client.get("/").status_code == 303  # logged out: to the login page
