"""`cenas serve RUN_DIR ...`: the live view, a read-only Starlette app over the runs' stores.

Routes (GET only; anything else is 405, an unknown path 404):
- ``/``: the page; ``/static/{app.js,style.css,plotly.min.js}``: its scripts and styles (a fixed list:
  no path parameter reaches the file system);
- ``/api/runs``: one summary per run (``name``, ``status``, ``version``, ...);
- ``/api/runs/{name}``: the run's page data (``data.run_detail``);
- ``/api/runs/{name}/candidates``: one row per candidate, each with ``id``;
- ``/api/runs/{name}/candidates/{id}``: one candidate in full (code, diff, prompt, answer, errors);
- ``/api/proxy-snr``: the ``cenas proxy-snr`` results shown (SNR, predicted against measured ρ_S).

A run is named by ``data.run_names`` and looked up in a dict: a name never becomes a path. Answers are
cached per run until its ``version`` (store, WAL and state.json stamps) changes, and recomputed at most
every ``max(MIN_REFRESH_S, SHARE x its cost)`` seconds, so a page polling every few seconds costs the run
one ``stat`` per file when nothing changed and a bounded share of a core when it writes; the server's
readers never lock the store against the run's writer (SQLite WAL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cenas_jax.view import data
from cenas_jax.view.page import CSP_SERVED, STATIC, page_html

# A run being written changes its version at every record. An answer is recomputed at most once per
# max(MIN_REFRESH_S, SHARE x the time its last computation took), so the server spends at most about 1/SHARE
# of a core on a run, however fast the run writes and however many pages poll it.
MIN_REFRESH_S = 2.0
SHARE = 10.0


class RunIndex:
    """The runs a server shows, and a per-run cache of their answers keyed by the run's version."""

    def __init__(self, run_dirs: list[str | Path], snr_dirs: list[str | Path] = ()) -> None:
        self.runs = data.run_names(run_dirs)
        self.snr = data.run_names(list(snr_dirs))
        self._cache: dict[tuple[str, str], tuple[str, Any, float, float]] = {}  # version, value, at, cost
        self._lock = threading.Lock()

    def cached(self, name: str, what: str, compute: Callable[[Path], Any]) -> Any:
        run_dir = self.runs[name]
        v = data.version(run_dir)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((name, what))
            if hit is not None and (hit[0] == v or now - hit[2] < max(MIN_REFRESH_S, SHARE * hit[3])):
                return hit[1]
        value = compute(run_dir)
        with self._lock:
            self._cache[(name, what)] = (v, value, now, time.monotonic() - now)
        return value


def make_app(run_dirs: list[str | Path], snr_dirs: list[str | Path] = ()):
    """The Starlette application serving ``run_dirs`` (and ``cenas proxy-snr`` results in ``snr_dirs``)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    index = RunIndex(run_dirs, snr_dirs)

    def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Content-Security-Policy": CSP_SERVED, "X-Content-Type-Options": "nosniff",
             "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
        h.update(extra or {})
        return h

    def js(payload: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(payload, status_code=status, headers=headers())

    def not_found(what: str) -> JSONResponse:
        return js({"error": f"no such {what}"}, 404)

    async def home(request):
        return Response(page_html(embedded=None), media_type="text/html; charset=utf-8", headers=headers())

    async def static(request):
        name = request.path_params["name"]
        if name not in STATIC:
            return not_found("file")
        body, media = STATIC[name]()
        return Response(body, media_type=media, headers=headers({"Cache-Control": "max-age=3600"}))

    async def runs(request):
        return js([index.cached(n, "summary", lambda d, n=n: data.run_summary(n, d)) for n in index.runs])

    async def snr(request):
        return js([data.proxy_snr(n, d) for n, d in index.snr.items()])

    def _run(request) -> str | None:
        name = request.path_params["name"]
        return name if name in index.runs else None

    async def run(request):
        name = _run(request)
        if name is None:
            return not_found("run")
        try:
            return js(index.cached(name, "detail", lambda d: data.run_detail(name, d)))
        except Exception as e:  # noqa: BLE001 - a damaged or half-created run is a message, not a 500
            return js({"name": name, "status": "damaged", "error": str(e)[:500]}, 409)

    async def cands(request):
        name = _run(request)
        if name is None:
            return not_found("run")
        try:
            return js(index.cached(name, "candidates", data.candidates))
        except Exception as e:  # noqa: BLE001 - any failure reading the run goes to the client as a 409
            return js({"error": str(e)[:500]}, 409)

    async def cand(request):
        name = _run(request)
        if name is None:
            return not_found("run")
        cid = request.path_params["cid"]
        rec = data.candidate(index.runs[name], cid)
        return not_found("candidate") if rec is None else js(rec)

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/proxy-snr", snr, methods=["GET"]),
        Route("/api/runs/{name}", run, methods=["GET"]),
        Route("/api/runs/{name}/candidates", cands, methods=["GET"]),
        Route("/api/runs/{name}/candidates/{cid}", cand, methods=["GET"]),
    ]
    app = Starlette(routes=routes)

    async def _404(request, exc):
        code = getattr(exc, "status_code", 404)
        return js({"error": "method not allowed: the view is read-only" if code == 405 else "not found"}, code)

    app.add_exception_handler(404, _404)
    app.add_exception_handler(405, _404)
    return app


def serve(run_dirs: list[str | Path], host: str = "127.0.0.1", port: int = 8765, echo=print,
          snr_dirs: list[str | Path] = ()) -> None:
    """Serve until Ctrl-C."""
    import uvicorn

    app = make_app(run_dirs, snr_dirs)
    extra = f" and {len(snr_dirs)} proxy-snr result(s)" if snr_dirs else ""
    echo(f"cenas serve: {len(run_dirs)} run(s){extra} at http://{host}:{port}/  (read-only; Ctrl-C stops)")
    if host in ("127.0.0.1", "localhost", "::1"):
        echo(f"  from another machine: ssh -N -L {port}:127.0.0.1:{port} USER@THIS_HOST, then open "
             f"http://127.0.0.1:{port}/ there")
    uvicorn.run(app, host=host, port=port, log_level="warning")
