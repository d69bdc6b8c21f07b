"""The dashboard in a real headless browser (Debian's chromium driven by
Selenium through Debian's chromedriver): log in with a key, run a call and
watch it appear with its output streaming live; a wrong key is refused;
the session cookie's flags; per-account views; logout and CSRF.

Screenshots go to $ATOLL_ARTIFACTS (else the test's temporary directory);
docs/dashboard.png is one of them (ATOLL_UPDATE_DOCS_SCREENSHOT=1 rewrites it)."""

from __future__ import annotations

import http.cookiejar
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, Server, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def need_browser() -> None:
    """Skips where chromium or chromedriver is missing; in CI (which
    installs both through scripts/setup.sh) that is a failure."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        reason = f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("ATOLL_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory):
    """A server with its dashboard, keys of accounts alice and bob, and of
    ops, an admin account."""
    port = free_port()
    srv = Server(
        tmp_path_factory.mktemp("dashboard") / "data",
        extra_args=["--dashboard", f"127.0.0.1:{port}", "--dashboard-admin-account", "ops"],
    )
    keys = {name: srv.create_key(name) for name in ("alice", "bob", "ops")}
    srv.start()
    yield srv, keys, f"http://127.0.0.1:{port}"
    srv.stop()
    assert "panic" not in srv.log(), srv.log()


@pytest.fixture
def browser():
    need_browser()
    # Selenium Manager must never fetch a browser or driver: both paths are
    # given, and it is told it is offline.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout: float = 60):
    """Waits until condition(driver) is true. Pages swap their live parts
    every 2 s, so an element found a moment ago may be gone: read it inside
    the condition."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)


def text_of(driver, by, value) -> str:
    return wait_for(driver, lambda d: d.find_element(by, value).text or " ")


def log_in(driver, base: str, key: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/login")
    driver.find_element(By.ID, "key_id").send_keys(key[0])
    driver.find_element(By.ID, "key_secret").send_keys(key[1])
    driver.find_element(By.ID, "login-submit").click()


def start_call(srv: Server, key: tuple[str, str], tmp_path: Path, source: str) -> subprocess.Popen:
    script = tmp_path / "call.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "ATOLL_HOST": srv.address, "ATOLL_KEY_ID": key[0], "ATOLL_KEY_SECRET": key[1],
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


SLOW_CALL = """
    import time
    from atoll import isolated

    @isolated(keep_alive=60)
    def report(n):
        print("first line from the worker", flush=True)
        time.sleep(n)
        print("second line from the worker", flush=True)
        return n

    print(report(12))
"""


def test_wrong_key_is_refused(dash, browser):
    from selenium.webdriver.common.by import By

    _, keys, base = dash
    log_in(browser, base, (keys["alice"][0], "not-the-secret"))
    error = wait_for(browser, lambda d: d.find_element(By.ID, "login-error"))
    assert "Wrong key" in error.text
    assert browser.current_url.endswith("/login")
    assert not any(c["name"] == "atoll_session" for c in browser.get_cookies())
    browser.get(base + "/runs")
    assert browser.current_url.endswith("/login")  # still not in


def test_login_run_a_call_and_watch_it_live(dash, browser, artifacts, tmp_path):
    from selenium.webdriver.common.by import By

    srv, keys, base = dash
    log_in(browser, base, keys["alice"])
    wait_for(browser, lambda d: d.find_element(By.ID, "account").text == "alice")

    session = next(c for c in browser.get_cookies() if c["name"] == "atoll_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["secure"] is False  # plain HTTP on loopback; Secure under --tls-cert
    assert keys["alice"][1] not in session["value"] and keys["alice"][0] not in session["value"]

    call = start_call(srv, keys["alice"], tmp_path, SLOW_CALL)
    try:
        # The run appears on the overview by itself (the page refreshes).
        run_id = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "table.runs tr[data-run]").get_attribute("data-run"))
        browser.get(f"{base}/runs/{run_id}")
        log = browser.find_element(By.ID, "log")
        # Output streams while the call runs: the first line is there, the
        # second not yet, and the run says it is running.
        wait_for(browser, lambda d: "first line from the worker" in log.text)
        assert "second line from the worker" not in log.text
        assert text_of(browser, By.ID, "run-status") == "running"
        browser.save_screenshot(str(artifacts / "dashboard-run-live.png"))
        wait_for(browser, lambda d: "second line from the worker" in log.text)
        wait_for(browser, lambda d: d.find_element(By.ID, "run-status").text == "ok")
        assert log.get_attribute("data-done") == "1"
        out, err = call.communicate(timeout=60)
        assert call.returncode == 0, err
        assert out.strip().splitlines()[-1] == "12"
    finally:
        if call.poll() is None:
            call.kill()
            call.wait()

    # The overview shows the warm worker and the finished run.
    browser.get(base + "/")
    workers = text_of(browser, By.ID, "workers")
    assert "report" in workers and "XS" in workers and "idle" in workers
    runs = text_of(browser, By.CSS_SELECTOR, "table.runs")
    assert run_id in runs and "ok" in runs
    browser.save_screenshot(str(artifacts / "dashboard-overview.png"))
    if os.environ.get("ATOLL_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copy(artifacts / "dashboard-overview.png", REPO / "docs" / "dashboard.png")
    browser.get(f"{base}/runs/{run_id}")
    wait_for(browser, lambda d: "second line" in d.find_element(By.ID, "log").text)  # from the history now too
    browser.get(base + "/environments")
    assert text_of(browser, By.ID, "environments").strip()
    browser.save_screenshot(str(artifacts / "dashboard-environments.png"))

    # Another account sees none of it, not even by the run's address.
    browser.delete_all_cookies()
    log_in(browser, base, keys["bob"])
    wait_for(browser, lambda d: d.find_element(By.ID, "account").text == "bob")
    assert run_id not in browser.page_source
    assert "report" not in text_of(browser, By.ID, "workers")
    browser.get(f"{base}/runs/{run_id}")
    assert "not found" in browser.page_source and "first line" not in browser.page_source

    # An admin account sees every account's runs.
    browser.delete_all_cookies()
    log_in(browser, base, keys["ops"])
    assert "admin" in text_of(browser, By.CSS_SELECTOR, ".who")
    browser.get(base + "/runs")
    runs = text_of(browser, By.CSS_SELECTOR, "table.runs")
    assert run_id in runs and "alice" in runs

    # Logging out ends the session on the server, not only in the browser.
    stale = next(c for c in browser.get_cookies() if c["name"] == "atoll_session")["value"]
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, lambda d: d.current_url.endswith("/login"))
    assert fetch(base + "/runs", stale)[0] == 303


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, session: str | None = None, data: dict | None = None, headers: dict | None = None):
    """(status, headers, body) of one request, redirects not followed."""
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data is not None else None,
                                 headers=headers or {})
    if session:
        req.add_header("Cookie", f"atoll_session={session}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def http_login(base: str, key: tuple[str, str]) -> tuple[int, str | None, list[str]]:
    """Logs in as a browser would, without one; returns the status, the
    session cookie's value and the Set-Cookie headers."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    with opener.open(base + "/login", timeout=10) as resp:
        page = resp.read().decode()
    token = page.split('name="token" value="', 1)[1].split('"', 1)[0]
    body = urllib.parse.urlencode({"token": token, "key_id": key[0], "key_secret": key[1]}).encode()
    req = urllib.request.Request(base + "/login", data=body, headers={"Origin": base})
    try:
        resp = opener.open(req, timeout=10)
    except urllib.error.HTTPError as err:
        resp = err
    cookies = resp.headers.get_all("Set-Cookie") or []
    session = next((c.value for c in jar if c.name == "atoll_session"), None)
    return resp.status if hasattr(resp, "status") else resp.code, session, cookies


def test_session_cookie_flags_and_csrf(dash):
    _, keys, base = dash
    status, session, cookies = http_login(base, keys["bob"])
    assert status == 303 and session
    set_session = next(c for c in cookies if c.startswith("atoll_session="))
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in set_session, set_session
    assert "Secure" not in set_session  # no TLS here

    # A logout without the session's CSRF token, or from another site, is
    # refused, and the session lives on.
    assert fetch(base + "/logout", session, data={})[0] == 403
    assert fetch(base + "/logout", session, data={"csrf": "guess"})[0] == 403
    page = fetch(base + "/", session)
    assert page[0] == 200
    csrf = page[2].split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert fetch(base + "/logout", session, data={"csrf": csrf}, headers={"Origin": "http://attacker.example"})[0] == 403
    assert fetch(base + "/", session)[0] == 200
    assert fetch(base + "/logout", session, data={"csrf": csrf}, headers={"Origin": base})[0] == 303
    assert fetch(base + "/", session)[0] == 303

    # A login form another site posts (without the form's token) is refused.
    body = {"token": "forged", "key_id": keys["bob"][0], "key_secret": keys["bob"][1]}
    status, headers, _ = fetch(base + "/login", data=body)
    assert status == 403 and "atoll_session" not in (headers.get("Set-Cookie") or "")
    # Pages carry a policy that keeps other origins' scripts and frames out.
    assert "frame-ancestors 'none'" in fetch(base + "/login")[1]["Content-Security-Policy"]


def test_revoked_key_ends_its_sessions(dash):
    from conftest import atoll_binary

    srv, _, base = dash
    key = srv.create_key("carol")
    status, session, _ = http_login(base, key)
    assert status == 303 and fetch(base + "/", session)[0] == 200
    subprocess.run([atoll_binary(), "keys", "revoke", key[0], "--data-dir", str(srv.data_dir)], check=True,
                   capture_output=True)
    deadline = time.monotonic() + 10
    while fetch(base + "/", session)[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fetch(base + "/", session)[0] == 303
    assert srv.alive()
