"""The live view (`cenas serve`) and the self-contained HTML report (`cenas report --html`).

The JSON API runs on synthetic stores through Starlette's test client. A real headless Chromium (Debian's
package, driven by Playwright; `make browser` installs it, `.ci/run` calls that) loads the page for a
finished run, for a run being written, and for a hostile candidate whose code and error message carry
script payloads: they must show as text and run nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from programs import mlp
from synthetic_run import make_run

from cenas_jax.store import CandidateRow, RunStore
from cenas_jax.view import data
from cenas_jax.view.page import embed_json, write_html

PAYLOAD_CODE = '# </script><script>window.__pwned=1;alert("code")</script>\n# <img src=x onerror=alert("img")>\n'
PAYLOAD_MSG = '<img src=x onerror="window.__pwned=1;alert(1)"><script>window.__pwned=2;alert("msg2")</script>'
HOSTILE = "s0-c002-009-a0"


def _add_hostile(run: Path) -> None:
    with RunStore(run) as s:
        rid = s.get_run("main")["id"]
        s.add_candidate(CandidateRow(id=HOSTILE, source=PAYLOAD_CODE + mlp(40), run_id=rid, cycle=2, idx=9,
                                     mode="full", dataset="digits", prompt="<b>prompt</b>", raw_text=PAYLOAD_MSG,
                                     token_count=50, finish_reason="eos", attempt=0, temperature=0.7))
        s.update_candidate(HOSTILE, verdict="invalid", error_kind="syntax", error_message=PAYLOAD_MSG)


@pytest.fixture()
def runs(tmp_path):
    a = make_run(tmp_path / "novelty-on", cycles=3, per_cycle=6, seed=0)
    b = make_run(tmp_path / "novelty-off", cycles=3, per_cycle=6, seed=1, novelty=False)
    _add_hostile(a)
    return a, b


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "store.sqlite").read_bytes()).hexdigest()


def _proxy_snr_result(out: Path) -> Path:
    """A real ``proxy_snr.json`` (the experiment's own writer) from synthetic score matrices."""
    import numpy as np

    from cenas_jax.config import RunConfig
    from cenas_jax.proxy_snr.analysis import analyze
    from cenas_jax.proxy_snr.experiment import ProxySNRResult, write_result_json

    rng = np.random.default_rng(0)
    q = rng.normal(0.8, 0.05, 12)
    a = analyze([f"a{i}" for i in range(12)], q[:, None] + rng.normal(0, 0.02, (12, 3)),
                q[:, None] + rng.normal(0, 0.005, (12, 2)), n_boot=200)
    out.mkdir(parents=True)
    write_result_json(ProxySNRResult(a, (), "corpus", 1, 10, 1.0, 2.0, None, None), RunConfig(), out / "proxy_snr.json")
    return out


@pytest.fixture()
def client(runs, tmp_path):
    from starlette.testclient import TestClient

    from cenas_jax.view.server import make_app

    return TestClient(make_app(list(runs), [_proxy_snr_result(tmp_path / "snr")]))


def test_api_shows_proxy_snr_results(client):
    (r,) = client.get("/api/proxy-snr").json()
    assert r["K"] == 12 and r["S"] == 3 and r["snr"] > 1
    comps = {c["name"]: c for c in r["comparisons"]}
    assert {"truth_single", "truth_mean", "retest"} <= set(comps)
    assert -1 <= comps["truth_single"]["measured"] <= 1 and comps["truth_single"]["predicted"] > 0


def test_api_lists_runs_and_candidates_and_reads_only(client, runs):
    before = [_digest(r) for r in runs]
    got = client.get("/api/runs").json()
    assert [r["name"] for r in got] == ["novelty-on", "novelty-off"]
    assert got[0]["status"] == "finished" and got[0]["cycles_completed"] == 3 and got[1]["novelty"] is False
    detail = client.get("/api/runs/novelty-on").json()
    assert [c["cycle"] for c in detail["cycles"]] == [0, 1, 2]
    assert detail["theory"][0]["result"].startswith("Thm 2") and detail["corpus_best_q"] > 1
    with RunStore(runs[0]) as s:
        ids = {r["id"] for r in s.candidates()}
    cands = client.get("/api/runs/novelty-on/candidates").json()
    assert {c["id"] for c in cands} == ids and all("source" not in c for c in cands)
    one = client.get(f"/api/runs/novelty-on/candidates/{HOSTILE}").json()
    assert one["source"].startswith(PAYLOAD_CODE) and one["error_message"] == PAYLOAD_MSG
    delta = next(c for c in cands if c["mode"] == "delta")
    d = client.get(f"/api/runs/novelty-on/candidates/{delta['id']}").json()
    assert d["lineage"][0] == delta["id"] and d["lineage"][-1].startswith("L-") and d["diff"].startswith("---")
    assert [_digest(r) for r in runs] == before, "the server wrote to a store"


def test_api_refuses_what_it_does_not_serve(client):
    r = client.get("/api/runs/nope")
    assert r.status_code == 404 and r.json() == {"error": "no such run"}
    assert client.get("/api/runs/novelty-on/candidates/nope").status_code == 404
    for path in ("/static/..%2F..%2F..%2Fetc%2Fpasswd", "/static/%2Fetc%2Fpasswd", "/api/runs/..%2Fnovelty-off",
                 "/../../etc/passwd", "/static/server.py"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "root:" not in r.text
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/api/runs").status_code == 405
    h = client.get("/").headers
    assert "script-src 'self'" in h["content-security-policy"] and "unsafe-eval" not in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff"
    assert client.get("/static/plotly.min.js").headers["content-type"].startswith("text/javascript")


def test_answers_follow_the_run_and_are_recomputed_at_a_bounded_rate(client, runs, monkeypatch):
    from cenas_jax.view import server

    monkeypatch.setattr(server, "MIN_REFRESH_S", 1.0)
    monkeypatch.setattr(server, "SHARE", 0.0)
    n0 = len(client.get("/api/runs/novelty-on/candidates").json())
    v0 = client.get("/api/runs").json()[0]["version"]
    with RunStore(runs[0]) as s:
        s.add_candidate(CandidateRow(id="s0-c002-010-a0", source=mlp(44), run_id=1, cycle=2, idx=10, mode="full",
                                     dataset="digits"))
    # Within the refresh interval the cached answer stands (a run writing fast does not make the server busy) ...
    assert len(client.get("/api/runs/novelty-on/candidates").json()) == n0
    time.sleep(1.1)
    # ... after it, the new record shows.
    assert client.get("/api/runs").json()[0]["version"] != v0
    assert len(client.get("/api/runs/novelty-on/candidates").json()) == n0 + 1


def test_run_names_are_unique_and_never_paths(tmp_path):
    a = tmp_path / "x" / "run"
    b = tmp_path / "y" / "run"
    c = tmp_path / "z" / "x-run"
    names = data.run_names([a, b, c, tmp_path / "a b<c>"])
    assert list(names) == ["run", "y-run", "x-run", "a-b-c"]
    assert all("/" not in n for n in names)


def test_embedded_json_cannot_close_its_script_block():
    text = embed_json({"s": PAYLOAD_CODE + "</SCRIPT>&<!--"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["s"] == PAYLOAD_CODE + "</SCRIPT>&<!--"


def test_html_report_is_self_contained_and_its_csp_allows_only_its_own_scripts(runs, tmp_path):
    out = write_html(list(runs), tmp_path / "report.html")
    html = out.read_text()
    assert "http://" not in html.split("<body>")[0].split('id="cenas-data"')[0]  # no remote resource in the head
    assert not re.search(r"<script[^>]*\bsrc=", html), "a script is loaded from outside the file"
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    import base64

    hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in scripts}
    assert len(scripts) == 2 and hashes <= set(csp.split("script-src")[1].split(";")[0].split())
    assert PAYLOAD_MSG not in html and "\\u003cimg src=x onerror" in html  # data only as JSON escapes


def test_cli_report_html_and_serve_errors(runs, tmp_path, capsys):
    from cenas_jax.cli import main

    assert main(["report", str(runs[0]), "--html", "--compare", str(runs[1])]) == 0
    assert (runs[0] / "report" / "report.html").stat().st_size > 1_000_000  # plotly.js inlined
    assert main(["report", str(runs[0]), "--compare", str(runs[1])]) == 2
    assert "give --html too" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty")]) == 2
    assert "no run directory inside it" in capsys.readouterr().err


# ---------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser():
    pw = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("no Chromium: `make browser` installs Debian's")
    return pw


class Watched:
    """A page with every dialog, console error and page error recorded."""

    def __init__(self, page):
        self.page, self.events = page, []
        page.on("dialog", lambda d: (self.events.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("console", lambda m: m.type == "error" and self.events.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.events.append(f"pageerror: {e}"))


@pytest.fixture()
def browser():
    pw = _browser()
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(runs):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cenas_jax", "serve", *map(str, runs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def _until(what: str, ok, timeout: float = 30) -> None:
    """Poll ``ok()`` from Python (the page's CSP forbids the string evaluation of wait_for_function)."""
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _check_page(w: Watched) -> None:
    page = w.page
    page.wait_for_selector("#candidates tr[data-id]", timeout=30_000)
    _until("six charts", lambda: page.locator(".chart .main-svg").count() >= 6)
    assert page.locator(".chart .scatterlayer .trace").count() > 0, "no chart drew data"
    assert page.locator("table.theory tr").count() >= 5
    page.locator(f'#candidates tr[data-id="{HOSTILE}"]').click()
    page.wait_for_selector("#detail pre.code")
    assert PAYLOAD_CODE.strip() in page.locator("#detail pre.code").inner_text()
    assert PAYLOAD_MSG in page.locator("#detail pre.error").inner_text()
    assert page.locator("#detail img, #detail script").count() == 0, "payload markup became elements"
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__pwned") is None
    assert not w.events, w.events


def test_browser_live_view_renders_updates_and_runs_no_payload(browser, server, runs):
    w = Watched(browser.new_page(viewport={"width": 1400, "height": 1000}))
    w.page.goto(server)
    _check_page(w)
    # A run being written: a new cycle lands, the page shows it within a few polls.
    rows = w.page.locator("#candidates tr[data-id]").count()
    with RunStore(runs[0]) as s:
        for i in range(3):
            cid = f"s0-c003-{i:03d}-a0"
            s.add_candidate(CandidateRow(id=cid, source=mlp(60 + i), run_id=1, cycle=3, idx=i, mode="full",
                                         dataset="digits"))
            s.add_evaluation(cid, {"status": "ok", "accuracy": 0.9, "seed_accuracies": [0.9], "params": 900 + i},
                             budget="proxy", dataset="digits")
            s.update_candidate(cid, verdict="accepted", quality=1.3)
        s.set_cycle(1, 3, gamma=1.3, elites=["s0-c003-000-a0"])
    _until("the new cycle's rows", lambda: w.page.locator("#candidates tr[data-id]").count() >= rows + 3)
    assert "s0-c003-000-a0" in w.page.locator("#candidates").inner_text()
    # Side by side: tick the second run, both appear in the charts' legends.
    w.page.locator("#run-novelty-off").check()
    _until("the second run's traces", lambda: "novelty-off: mean Q" in w.page.locator("#charts").inner_text())
    assert not w.events, w.events


def test_browser_self_contained_report_renders_and_runs_no_payload(browser, runs, tmp_path):
    out = write_html(list(runs), tmp_path / "report.html", [_proxy_snr_result(tmp_path / "snr")])
    w = Watched(browser.new_page(viewport={"width": 1400, "height": 1000}))
    w.page.route("**/*", lambda r: r.abort() if not r.request.url.startswith("file:") else r.continue_())
    w.page.goto(out.as_uri())
    _check_page(w)
    assert "snapshot" in w.page.locator("#live").inner_text()
    assert "K = 12 architectures" in w.page.locator("#snr").inner_text()
    assert w.page.locator("#snr .main-svg").count() > 0


def test_a_store_of_an_older_schema_is_shown_as_such_and_never_upgraded(tmp_path):
    from starlette.testclient import TestClient
    from test_store import _make_v2_store

    from cenas_jax.view.server import make_app

    _make_v2_store(tmp_path / "old")
    before = _digest(tmp_path / "old")
    (r,) = TestClient(make_app([tmp_path / "old"])).get("/api/runs").json()
    assert r["status"] == "damaged" and "schema version 2, older" in r["error"]
    assert _digest(tmp_path / "old") == before
