"""The console in a real browser (Debian's chromium + chromium-driver through Selenium)
against the local S3 server with real segments, raw vault and audit bucket.

One shared stack, one console (uvicorn on a free port) and one browser for the module.
Screenshots of the camera list, the player and the subject-request page are written to
``docs/`` when ``VEILSTREAM_SCREENSHOTS=1`` (``make console-screenshots``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "veilstream-demo"
USERS = {"ana": "analyst", "pia": "privacy-officer", "ivan": "investigator", "aud": "auditor", "sam": "sre"}
SEGMENT_S = 10.0


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if not browser or not driver:
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run `make system-deps` "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    return browser, driver


@pytest.fixture(scope="module")
def stack(s3, tmp_path_factory):
    """Config, policies, users and one real camera-day per camera in the local S3 server."""
    import yaml

    from pipeline.console.auth import hash_password
    from pipeline.console.sample import write_camera_day
    from pipeline.governance.vault import make_key_file
    from schemas.config import parse_camera, parse_config

    d = tmp_path_factory.mktemp("console")
    (d / "policies").mkdir()
    (d / "policies" / "default.yaml").write_text(yaml.safe_dump({
        "policy_id": "default", "retention": {"redacted_days": 1, "raw_days": 1},
        "roles": {"analyst": {"read": ["redacted", "manifests"], "cameras": ["cam-00*"]},
                  "privacy-officer": {"read": ["redacted", "manifests", "audit"], "cameras": ["*"], "export": True},
                  "investigator": {"read": ["redacted", "manifests", "raw"], "cameras": ["*"]},
                  "auditor": {"read": ["manifests", "audit"], "cameras": ["*"]}}}))
    (d / "policies" / "street.yaml").write_text(yaml.safe_dump({
        "policy_id": "street", "classes": ["face", "plate", "person"],
        "roles": {"privacy-officer": {"read": ["redacted", "manifests"], "cameras": ["*"], "export": True}}}))
    (d / "s3-access-key").write_text(s3.access_key)
    (d / "s3-secret-key").write_text(s3.secret_key)
    make_key_file(d / "master.key")
    h = hash_password(PASSWORD)
    (d / "users.yaml").write_text(yaml.safe_dump({"users": [
        {"username": u, "password_hash": h, "roles": [r]} for u, r in USERS.items()]}))
    cfg = parse_config({
        "policies_dir": str(d / "policies"),
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},  # unused: registry given, audit to the bucket only
        "object_store": {"endpoint": s3.endpoint, "bucket": "console-redacted", "audit_bucket": "console-audit",
                         "raw_bucket": "console-raw", "object_lock": True,
                         "access_key_file": str(d / "s3-access-key"), "secret_key_file": str(d / "s3-secret-key")},
        "raw_vault": {"key_file": str(d / "master.key")},
        "sink": {"segment_seconds": SEGMENT_S},
        "console": {"users_file": str(d / "users.yaml"), "secure_cookies": False, "work_dir": str(d / "jobs"),
                    "share_ttl_s": 600},
    })
    notice = {"purpose": "passenger safety", "scope": "platform 2, 05:00-01:00", "contact": "privacy@metro.example"}
    registry = {
        "cam-001": parse_camera({"camera_id": "cam-001", "url": "rtsp://10.0.0.1/live", "kind": "rtsp",
                                 "policy_id": "default", "notice": notice}),
        "cam-002": parse_camera({"camera_id": "cam-002", "url": "rtsp://10.0.0.2/live", "kind": "rtsp",
                                 "policy_id": "street", "notice": {"purpose": "traffic", "scope": "crossing"}}),
    }
    now = int(time.time() * 1000)
    start = now - now % int(SEGMENT_S * 1000) - 6 * int(SEGMENT_S * 1000)
    if time.gmtime(start / 1000).tm_mday != time.gmtime(now / 1000).tm_mday:  # keep one UTC day
        start = now - now % 86400_000 + 1000 * int(SEGMENT_S)
    day1 = write_camera_day(cfg, "cam-001", start, notice=notice)
    day2 = write_camera_day(cfg, "cam-002", start, windows=(0,), raw=False, policy_id="street",
                            fail_closed_chunk=None)
    return {"cfg": cfg, "registry": registry, "cam1": day1, "cam2": day2, "start": start, "dir": d}


@pytest.fixture(scope="module")
def console(stack):
    """The console served by uvicorn on a free port, as `veilstream console` serves it."""
    import uvicorn

    from pipeline.console.app import create_app
    from pipeline.console.server import build_services
    from pipeline.devstack import free_port

    svc = build_services(stack["cfg"], registry=lambda: stack["registry"], kafka=False)
    app = create_app(svc, secure_cookies=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    yield {"base": base, "svc": svc}
    server.should_exit = True
    t.join(10)
    svc.jobs.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(a)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    b.set_page_load_timeout(60)
    b.set_script_timeout(60)
    yield b
    b.quit()


def sign_in(browser, base: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(base + "/login")
    browser.find_element(By.ID, "username").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    wait(lambda: "/cameras" in browser.current_url, f"{user} signed in")
    assert user in browser.find_element(By.ID, "whoami").text


def wait(pred, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


def shot(browser, name: str) -> None:
    if os.environ.get("VEILSTREAM_SCREENSHOTS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        browser.execute_script("window.scrollTo(0, 0);")
        browser.save_screenshot(str(ROOT / "docs" / name))


FRAME_CHECK = """
const v = document.getElementById(arguments[0]);
const done = arguments[arguments.length - 1];
const check = () => {
  if (v.readyState < 3) { setTimeout(check, 100); return; }
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, n = 0; for (let i = 0; i < px.length; i += 4 * 97) { sum += px[i] + px[i+1] + px[i+2]; n++; }
  done({ready: v.readyState, w: v.videoWidth, h: v.videoHeight, mean: sum / (3 * n), err: v.error && v.error.code});
};
check();
"""


def test_analyst_plays_a_segment_and_is_refused_elsewhere(stack, console, browser):
    from selenium.webdriver.common.by import By

    base = console["base"]
    sign_in(browser, base, "ana")
    rows = browser.find_elements(By.CSS_SELECTOR, "#cameras tbody tr[data-camera]")
    assert [r.get_attribute("data-camera") for r in rows] == ["cam-001"]  # not the street group
    assert "passenger safety" in rows[0].text and "privacy@metro.example" in rows[0].text
    rows[0].find_element(By.LINK_TEXT, "cam-001").click()
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#timeline .seg"), "timeline")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline .seg")) == 3
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline .fc"), "fail-closed frame marked"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gaps li")) == 1, "the left-out window is a gap"
    browser.find_element(By.CSS_SELECTOR, "button.play[data-index='0']").click()
    st = browser.execute_async_script(FRAME_CHECK, "player")
    assert st["ready"] >= 3 and (st["w"], st["h"]) == (stack["cam1"].width, stack["cam1"].height), st
    assert st["mean"] > 10, f"first frame did not decode to an image: {st}"
    # frame-accurate stepping: frame 7, then one forward
    browser.execute_script("const s=document.getElementById('scrubber'); s.value=7; s.dispatchEvent(new Event('input'));")
    wait(lambda: browser.find_element(By.ID, "frame-info").text.startswith("frame 7 "), "frame 7")
    browser.find_element(By.ID, "next-frame").click()
    wait(lambda: browser.find_element(By.ID, "frame-info").text.startswith("frame 8 "), "frame 8")
    shot(browser, "console-player.png")
    # consecutive segments play on: jump near the end of segment 1 and let it run
    browser.execute_script("const v=document.getElementById('player'); v.currentTime=v.duration-0.3; v.play();")
    wait(lambda: browser.execute_script("return document.getElementById('player').dataset.segment") == "1",
         "playback went on to the next segment", 20)
    # forbidden: another camera group, and raw footage
    k2 = stack["cam2"].segment_keys[0]
    r = browser.execute_async_script(
        "const done=arguments[arguments.length-1]; fetch('/api/segments/'+arguments[0]).then(r=>done(r.status));", k2)
    assert r == 403
    r = browser.execute_async_script("""const done=arguments[arguments.length-1];
        veilApi('/api/case-exports', {camera_id:'cam-001', from:arguments[0], to:arguments[1], case:'C-1',
          legal_basis:'x', official:'y'}).then(()=>done(200)).catch(e=>done(e.status));""",
        stack["start"], stack["start"] + 5000)
    assert r == 403
    browser.get(base + "/cameras/cam-002")
    assert "403" in browser.find_element(By.TAG_NAME, "h1").text
    assert "may not view footage" in browser.find_element(By.ID, "error-message").text


def test_privacy_officer_draws_a_subject_box_and_releases_the_export(stack, console, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    base = console["base"]
    sign_in(browser, base, "pia")
    rows = browser.find_elements(By.CSS_SELECTOR, "#cameras tbody tr[data-camera]")
    assert [r.get_attribute("data-camera") for r in rows] == ["cam-001", "cam-002"]
    shot(browser, "console-cameras.png")
    browser.get(base + "/cameras/cam-001/subject")
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#timeline .seg"), "timeline")
    st = browser.execute_async_script(FRAME_CHECK, "player")
    assert st["ready"] >= 3, st
    # pause on frame 10 and box the person (found on that frame by the project's own detector)
    browser.execute_script("const s=document.getElementById('scrubber'); s.value=10; s.dispatchEvent(new Event('input'));")
    wait(lambda: browser.find_element(By.ID, "frame-info").text.startswith("frame 10 "), "frame 10")
    x, y, w, h = _person_box(stack, frame=10)
    canvas = browser.find_element(By.ID, "box-canvas")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    scale = canvas.size["width"] / stack["cam1"].width
    ox, oy = -canvas.size["width"] / 2, -canvas.size["height"] / 2  # offsets are from the centre
    (ActionChains(browser).move_to_element_with_offset(canvas, int(ox + x * scale) + 1, int(oy + y * scale) + 1)
     .click_and_hold().move_by_offset(int(w * scale), int(h * scale)).release().perform())
    box = [int(v) for v in browser.find_element(By.ID, "box").get_attribute("value").split(",")]
    assert abs(box[0] - x) <= 3 and abs(box[2] - w) <= 4, (box, (x, y, w, h))
    seg0 = stack["start"]
    browser.execute_script("document.getElementById('from').value=arguments[0];"
                           "document.getElementById('to').value=arguments[1];",
                           _iso(seg0), _iso(seg0 + 4000))
    browser.find_element(By.ID, "case").send_keys("DSR-2026-0042")
    shot(browser, "console-subject-request.png")
    browser.find_element(By.ID, "subject-submit").click()
    wait(lambda: "/jobs/" in browser.current_url, "job page")
    wait(lambda: browser.find_element(By.ID, "job-state").text in ("done", "failed"), "export finished", 240)
    assert browser.find_element(By.ID, "job-state").text == "done", browser.find_element(By.ID, "job-message").text
    report = json.loads(browser.find_element(By.ID, "job-report").text)
    assert report["frames"] > 0 and report["subject_visible_frames"] > 0, report
    st = browser.execute_async_script(FRAME_CHECK, "preview")
    assert st["ready"] >= 3 and st["mean"] > 10, st
    browser.find_element(By.ID, "release").click()
    link = wait(lambda: browser.find_elements(By.ID, "shared-link"), "release link")[0].get_attribute("href")
    with urllib.request.urlopen(link, timeout=30) as r:  # the recipient: no session, just the link
        assert r.read(12)[4:8] == b"ftyp"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(re.sub(r"/shared/[^/?]+", "/shared/forged", link), timeout=30)
    assert e.value.code == 403
    # a redacted segment shared from the timeline: a console link (revocable, each opening recorded)
    browser.get(base + "/cameras/cam-001")
    f = browser.find_element(By.ID, "share-form")
    f.find_element(By.NAME, "case").send_keys("DSR-2026-0042")
    f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    out = wait(lambda: (t := f.find_element(By.TAG_NAME, "output").text) not in ("", "working…") and t, "share")
    assert not out.startswith("error"), out
    res = json.loads(out)
    assert res["key"] == stack["cam1"].segment_keys[0] and "/shared/segments/" in res["url"], res
    with urllib.request.urlopen(res["url"], timeout=30) as r:
        assert r.read(12)[4:8] == b"ftyp"


def test_investigator_holds_from_the_timeline_and_exports_a_case(stack, console, browser):
    from selenium.webdriver.common.by import By

    base = console["base"]
    sign_in(browser, base, "ivan")
    browser.get(base + "/cameras/cam-001")
    form = browser.find_element(By.ID, "hold-form")
    form.find_element(By.NAME, "case").send_keys("C-77")
    form.find_element(By.CSS_SELECTOR, "button[value=add]").click()
    out = wait(lambda: (t := form.find_element(By.TAG_NAME, "output").text) not in ("", "working…") and t, "hold")
    res = json.loads(out)
    assert res["held"] is True and res["objects"] >= 6, res  # 3 segments + 3 manifests (+ raw objects)
    browser.get(base + "/cases")
    f = browser.find_element(By.ID, "case-form")
    for name, value in (("from", _iso(stack["start"])), ("to", _iso(stack["start"] + 3000)), ("case", "C-77"),
                        ("legal_basis", "Criminal Procedure Act art. 215"), ("official", "Det. Park, precinct 3")):
        f.find_element(By.NAME, name).send_keys(value)
    f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(lambda: "/jobs/" in browser.current_url, "case export job page")
    wait(lambda: browser.find_element(By.ID, "job-state").text in ("done", "failed"), "case export finished", 120)
    assert browser.find_element(By.ID, "job-state").text == "done", browser.find_element(By.ID, "job-message").text
    report = json.loads(browser.find_element(By.ID, "job-report").text)
    assert report["unmasked"] is True and report["case_id"] == "C-77" and report["frames"] > 0


def test_auditor_reads_the_trail_and_verifies_a_day(stack, console, browser):
    from selenium.webdriver.common.by import By

    base = console["base"]
    sign_in(browser, base, "aud")
    browser.get(base + "/audit?action=view")
    text = browser.find_element(By.ID, "events").text
    assert "ana" in text and "cam-001" in text  # the analyst's playback is on record
    browser.get(base + "/audit?case=DSR-2026-0042")
    text = browser.find_element(By.ID, "events").text
    for action in ("subject_export", "share", "share_open"):
        assert action in text, text
    browser.get(base + "/audit?case=C-77")
    text = browser.find_element(By.ID, "events").text
    assert "hold_add" in text and "case_export" in text and "ivan" in text, text
    day = time.strftime("%Y-%m-%d", time.gmtime(stack["start"] / 1000))
    browser.get(base + "/audit")
    browser.find_element(By.CSS_SELECTOR, "#verify-form input[name=date]").send_keys(_date_keys(day))
    browser.find_element(By.CSS_SELECTOR, "#verify-form button").click()
    out = wait(lambda: browser.find_element(By.CSS_SELECTOR, "#verify-form output").text.strip() not in ("", "working…")
               and browser.find_element(By.CSS_SELECTOR, "#verify-form output").text, "verify result")
    res = json.loads(out)
    assert res["ok"] is True and res["segments_checked"] == 3, res


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _date_keys(day: str) -> str:
    y, m, d = day.split("-")
    return f"{m}{d}{y}"  # chromium's date input in the en-US locale takes MMDDYYYY


def _person_box(stack, frame: int) -> tuple[int, int, int, int]:
    """The face on ``frame`` of cam-001's first window, by the detector the export uses."""
    from operators.subject import subject_redactor
    from pipeline.console.sample import _frames

    frames = _frames("carphone_pristine.mp4", frame + 1)
    raw, _f, _e, _ms = subject_redactor("mosaic").detect(frames[frame:frame + 1])
    b = raw[0]
    assert b is not None and len(b.xyxy), "no person or face on the sample frame"
    i = int(b.score.argmax())
    x0, y0, x1, y1 = (float(v) for v in b.xyxy[i])
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)
