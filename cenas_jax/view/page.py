"""The page of the live view, served (scripts from /static) or self-contained (scripts inlined, data embedded).

Safety: the page builds every element with DOM calls and puts text that came from a run in with
``textContent``; no HTML from a store is ever parsed. The Content-Security-Policy allows only our
scripts: ``'self'`` when served, the SHA-256 of each inlined script in the self-contained file. The
embedded data is a ``<script type="application/json">`` block (never executed) whose ``<``, ``>`` and
``&`` are JSON escapes, so no text in it can close the block.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from cenas_jax.errors import UserError
from cenas_jax.report.analysis import analyse
from cenas_jax.store import RunStore
from cenas_jax.view import data

# Plotly sets element styles through the CSSOM (allowed); 'unsafe-inline' for styles only, never scripts.
CSP_SERVED = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
              "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _own(name: str) -> bytes:
    return resources.files("cenas_jax.view").joinpath("static", name).read_bytes()


@functools.lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """plotly.js as the installed plotly package ships it (no network)."""
    try:
        return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise UserError(f"the live view needs the plotly package (`make install` installs it): {e}") from None


STATIC: dict[str, Callable[[], tuple[bytes, str]]] = {
    "app.js": lambda: (_own("app.js"), "text/javascript; charset=utf-8"),
    "style.css": lambda: (_own("style.css"), "text/css; charset=utf-8"),
    "plotly.min.js": lambda: (plotly_js(), "text/javascript; charset=utf-8"),
}

_BODY = """<body>
<header><h1>cenas_jax</h1><span id="subtitle"></span><span id="live"></span></header>
<nav id="runs"></nav>
<main>
<section id="status"></section>
<section id="charts"></section>
<section id="theory"></section>
<section id="snr"></section>
<section id="table"></section>
<section id="detail"></section>
</main>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def embed_json(payload: Any) -> str:
    """JSON that cannot end the script block it sits in."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_html(embedded: dict[str, Any] | None) -> str:
    """The served page (``embedded`` None) or the self-contained one (``embedded``: all the data it shows)."""
    head = ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n<title>cenas_jax runs</title>\n'
            '<link rel="icon" href="data:,">\n')
    if embedded is None:
        return (head + '<link rel="stylesheet" href="/static/style.css">\n'
                '<script src="/static/plotly.min.js"></script>\n<script src="/static/app.js" defer></script>\n'
                "</head>\n" + _BODY + "</body></html>\n")
    css = _own("style.css").decode()
    scripts = [plotly_js().decode(), _own("app.js").decode()]
    csp = ("default-src 'none'; script-src " + " ".join(_sha256(s) for s in scripts)
           + "; style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; form-action 'none'")
    return (head + f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            f"<style>{css}</style>\n"
            f'<script type="application/json" id="cenas-data">{embed_json(embedded)}</script>\n'
            + "".join(f"<script>{s}</script>\n" for s in scripts[:1]) + "</head>\n" + _BODY
            + f"<script>{scripts[1]}</script>\n</body></html>\n")


def write_html(run_dirs: list[str | Path], out: str | Path, snr_dirs: list[str | Path] = ()) -> Path:
    """``cenas report RUN_DIR --html``: every view of the runs in one file, no server, no network."""
    names = data.run_names(run_dirs)
    payload: dict[str, Any] = {"runs": [], "details": {}, "candidates": {}, "candidate": {},
                               "proxy_snr": [data.proxy_snr(n, d) for n, d in data.run_names(list(snr_dirs)).items()]}
    for name, d in names.items():
        payload["runs"].append(data.run_summary(name, d))
        try:
            payload["details"][name] = data.run_detail(name, d)
            rows = data.candidates(d)
        except Exception as e:  # noqa: BLE001 - a damaged run is shown as such
            payload["details"][name] = {"name": name, "status": "damaged", "error": str(e)[:500]}
            rows = []
        payload["candidates"][name] = rows
        if rows:
            a = analyse(d, migrate=False)
            with RunStore(d, create=False, migrate=False) as store:
                payload["candidate"][name] = {r["id"]: data.candidate(d, r["id"], a, store) for r in rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page_html(payload), encoding="utf-8")
    return out
