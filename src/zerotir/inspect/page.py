"""`inspector.html`: one self-contained page (no network, no CDN) over the samples of one or more runs.

The page's HTML, CSS and JS live in `page/` as package data; `build_page` inlines them together with
the runs' `samples.jsonl` records and a few per-step curves from `metrics.jsonl`, so the file opens
from disk (`file://`), from a report directory, or through `serve` on localhost. Views are addressed
by the URL hash (`inspector.html#run=0&step=12`), which is how `report.html` links steps to samples.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
from importlib import resources
from pathlib import Path

from zerotir.inspect.samples import read_samples
from zerotir.logger import read_metrics

PAGE_FILE = "inspector.html"
CURVE_METRICS = {
    "accuracy": "reward/accuracy",
    "code_ratio": "rollout/code_ratio",
    "tool_error_ratio": "rollout/tool_error_ratio",
    "response_len": "rollout/response_len_mean",
}
"""Short names the page plots -> metric keys of metrics.jsonl."""


def _asset(name: str) -> str:
    return (resources.files("zerotir.inspect") / "page" / name).read_text(encoding="utf-8")


def run_payload(run_dir: str | Path, label: str | None = None) -> dict:
    """What the page needs of one run: its label, samples and the curves to click on."""
    from zerotir.analysis.report import run_label

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory")
    metrics = [
        {"step": r["step"], **{k: r.get(m) for k, m in CURVE_METRICS.items()}}
        for r in read_metrics(run_dir)
        if "step" in r
    ]
    return {
        "label": label or run_label(run_dir),
        "dir": str(run_dir),
        "samples": read_samples(run_dir),
        "metrics": metrics,
    }


def render_page(runs: list[dict]) -> str:
    """The page's HTML with `runs` (from `run_payload`) embedded."""
    data = {"generated": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "runs": runs}
    # "</" could close the script element early; "<\/" is the same JSON string.
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    html = _asset("inspector.html")
    for marker, text in (("/*__CSS__*/", _asset("inspector.css")), ("/*__JS__*/", _asset("inspector.js"))):
        html = html.replace(marker, text, 1)
    return html.replace("/*__DATA__*/", blob, 1)


def write_page(runs: list[dict], out: str | Path) -> Path:
    """Write the page for `runs` (from `run_payload`) to `out`: a .html file, or a directory to hold
    inspector.html. Returns the path written."""
    out = Path(out)
    if out.suffix != ".html":
        out = out / PAGE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(runs), encoding="utf-8")
    return out


def build_page(
    run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None
) -> tuple[Path, int]:
    """Write the inspector for `run_dirs` to `out`; returns (path written, number of samples embedded)."""
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs = [run_payload(rd, labels[i] if labels else None) for i, rd in enumerate(run_dirs)]
    return write_page(runs, out), sum(len(r["samples"]) for r in runs)


def serve(page: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the page (and nothing else of the run directory) until interrupted; localhost by default."""
    body = page.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path.split("?")[0].split("#")[0] not in ("/", f"/{page.name}"):
                self.send_error(404, "only the inspector page is served")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with http.server.ThreadingHTTPServer((host, port), Handler) as httpd:
        print(f"zerotir inspect: http://{host}:{httpd.server_address[1]}/{page.name}  (Ctrl-C to stop)", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
