"""Sandbox throughput and latency: the warm fork-server pool vs `subprocess.run([python, "-c", code])`.

Both measured in the same run at concurrency 1, 16 and 64 on three snippets; results (every cell,
ratios, memory per worker) go to bench/results/sandbox.json.

The pool is built through `zerotir.build` from the config's `sandbox` section (1 worker, 16 slots;
trailing `sandbox.*=value` overrides change it). The two baselines are deliberately built by hand,
since they are what the pool is measured against: a fresh `python -c` per execution, and a bare
forked child of an interpreter warmed up like a fork server (no sandbox, no pool: the floor).

    python bench/sandbox.py [--quick | --smoke] [sandbox.key=value ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_config_args, bench_config, write_result  # noqa: E402

from zerotir import build  # noqa: E402
from zerotir.sandbox.pool import ExecutorPool  # noqa: E402

SNIPPETS = {
    "print": "print(1+1)",
    "sympy": "import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 5*x + 6, x), sp.simplify(sp.sin(x)**2 + sp.cos(x)**2))",
    "numpy": "import numpy as np\na = np.arange(10000).reshape(100, 100)\nprint(int((a @ a.T).trace()))",
}


FLOOR_SCRIPT = r"""
import contextlib, io, json, os, sys, time
from zerotir.sandbox._forkserver import ForkServer
cfg = json.loads(sys.argv[1])
ForkServer(cfg).preimport()  # the fork server's own imports, warm-up and settings
with contextlib.redirect_stdout(io.StringIO()):
    code = compile(cfg["code"], "<code>", "exec")
    forked = []  # (wall ms of fork + run + exit seen by the parent, ms of the run inside the child)
    for _ in range(cfg["forks"]):
        r, w = os.pipe()
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            t1 = time.perf_counter()
            exec(code, {"__name__": "__main__"})
            os.write(w, str(time.perf_counter() - t1).encode())
            os._exit(0)
        os.close(w)
        inner = float(os.read(r, 64))
        os.waitpid(pid, 0)
        forked.append((time.perf_counter() - t, inner))
        os.close(r)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        exec(code, {"__name__": "__main__"})
        times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "forked": forked}))
"""


def compute_floor(code: str, pool: ExecutorPool, forks: int = 15) -> dict:
    """The snippet's own compute, outside any sandbox, in an interpreter that imported and warmed
    up like a fork server. `fork_*`: a bare forked child of that interpreter runs the snippet once
    and exits (median of `forks`), the least a process per execution can cost; `first_run_ms` in
    the interpreter itself, `repeat_run_ms` what sympy's caches save once the very same
    expressions were built before."""
    server = pool.servers_for(code)[0]  # the imports and warm-up of the server this code runs in
    spec = {"preimport": list(server.preimport), "warmup": server.warmup, "code": code, "forks": forks}
    out = subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    res = json.loads(out.stdout)
    times = res["times"]
    return {
        "first_run_ms": 1000 * times[0],
        "repeat_run_ms": 1000 * statistics.median(times[1:]),
        "fork_wall_ms": 1000 * statistics.median(w for w, _ in res["forked"]),
        "fork_first_run_ms": 1000 * statistics.median(i for _, i in res["forked"]),
    }


def measure(run_one, n: int, conc: int) -> tuple[float, list[float], bool]:
    """n calls from `conc` threads: (throughput per s, latencies in s, all ok)."""
    lat: list[float] = []

    def task(_):
        t = time.perf_counter()
        out = run_one()
        lat.append(time.perf_counter() - t)
        return out

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(conc) as ex:
        outs = list(ex.map(task, range(n)))
    return n / (time.perf_counter() - t0), lat, all(outs)


def summary(tps: list[float], lat: list[float], ok: bool) -> dict:
    lat = sorted(lat)
    return {
        "n": len(lat),
        "throughput_per_s": statistics.median(tps),
        "throughput_rounds": tps,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "outputs_ok": ok,
    }


def pss_kb(pid: int) -> int:
    """Proportional set size of a process and its descendants (shared pages split fairly)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for ln in open(f"/proc/{p}/smaps_rollup"):
                if ln.startswith("Pss:"):
                    total += int(ln.split()[1])
            for t in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (t / "children").read_text().split()]
        except OSError:
            continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--snippets", default=",".join(SNIPPETS), help="comma-separated subset of: " + ", ".join(SNIPPETS))
    ap.add_argument("--result-name", default="sandbox", help="bench/results/NAME.json")
    ap.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrency levels")
    ap.add_argument("--smoke", action="store_true", help="print snippet, concurrency 1, one round: only checks that it runs")
    add_config_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.snippets, args.concurrency, args.rounds = "print", "1", 1
    snippets = {k: SNIPPETS[k] for k in args.snippets.split(",")}
    levels = [int(c) for c in args.concurrency.split(",")]
    scale = 0.02 if args.smoke else 0.25 if args.quick else 1.0
    pool = build.make_pool(bench_config(None, ["sandbox.workers=1", "sandbox.slots=16"], args.overrides))
    for code in snippets.values():  # warm-up
        pool.run(code)
    cells = []
    floors = {}
    for name, code in snippets.items():
        floors[name] = floor = compute_floor(code, pool, forks=3 if args.smoke else 15)
        print(
            f"{name:6s} compute floor (no sandbox, warm interpreter): first run {floor['first_run_ms']:.2f} ms, "
            f"repeat {floor['repeat_run_ms']:.2f} ms; bare forked child: run {floor['fork_first_run_ms']:.2f} ms, "
            f"fork+run+exit {floor['fork_wall_ms']:.2f} ms",
            flush=True,
        )
        for conc in levels:
            n_ours = max(conc, int((300 if name == "print" else 100) * scale))
            n_base = max(conc, int((40 if name == "print" else 12) * scale) if conc == 1 else conc)
            child_s: list[float] = []

            def ours_one(c=code, child_s=child_s):
                r = pool.run(c, timeout_s=60)
                child_s.append(r.seconds)
                return r.status == "ok"

            def base_one(c=code):  # the baseline, by hand: a fresh interpreter per execution
                return (
                    subprocess.run([sys.executable, "-c", c], capture_output=True, timeout=120).returncode
                    == 0
                )

            # Rounds alternate between the two so that a noisy neighbour hits both alike; the speed-up
            # is the median of the per-round ratios.
            o_tp, o_lat, b_tp, b_lat, ok_o, ok_b = [], [], [], [], True, True
            for _ in range(args.rounds):
                tp, lat, ok = measure(ours_one, n_ours, conc)
                o_tp.append(tp), o_lat.extend(lat)
                ok_o &= ok
                tp, lat, ok = measure(base_one, n_base, conc)
                b_tp.append(tp), b_lat.extend(lat)
                ok_b &= ok
            ratios = [a / b for a, b in zip(o_tp, b_tp)]
            ours, base = summary(o_tp, o_lat, ok_o), summary(b_tp, b_lat, ok_b)
            ours["child_ms_p50"] = 1000 * statistics.median(child_s)
            cell = {
                "snippet": name,
                "concurrency": conc,
                "zerotir": ours,
                "subprocess": base,
                "speedup": statistics.median(ratios),
                "speedup_rounds": ratios,
            }
            if conc == 1:
                cell["p50_over_fork_floor"] = ours["p50_ms"] / floor["fork_wall_ms"]
                cell["p50_over_fork_run"] = ours["p50_ms"] / floor["fork_first_run_ms"]
            cells.append(cell)
            print(
                f"{name:6s} c={conc:3d}  zerotir {ours['throughput_per_s']:8.1f}/s p50 {ours['p50_ms']:7.2f} ms "
                f"p99 {ours['p99_ms']:7.2f} ms (in the fork server {ours['child_ms_p50']:.1f} ms) | subprocess "
                f"{base['throughput_per_s']:6.2f}/s p50 {base['p50_ms']:7.1f} ms | x{cell['speedup']:.1f} "
                f"(rounds {', '.join(f'{r:.1f}' for r in ratios)})"
                + (f" | p50 / bare fork {cell['p50_over_fork_floor']:.2f}x" if conc == 1 else ""),
                flush=True,
            )
    heavy = [srv.proc.pid for srv in pool.servers if srv.proc is not None]
    light = [srv.proc.pid for srv in pool.light if srv.proc is not None]
    numpy = [srv.proc.pid for srv in pool.numpy if srv.proc is not None]
    mem = {
        "forkserver_pss_mb_per_worker": round(sum(pss_kb(p) for p in heavy) / 1024 / max(1, len(heavy)), 1),
        "light_forkserver_pss_mb": round(sum(pss_kb(p) for p in light) / 1024, 1),
        "numpy_forkserver_pss_mb": round(sum(pss_kb(p) for p in numpy) / 1024, 1),
        "isolation": pool.isolation,
        "slots_per_worker": pool.cfg.slots_per_worker,
    }
    pool.close()
    path = write_result(
        args.result_name,
        {
            "cells": cells,
            "compute_floor_ms": floors,
            "memory": mem,
            "targets": {
                "c1_p50_over_fork_floor": 1.25,
                "print_c16_speedup": 3.5,
                "sympy_numpy_c16_speedup": 25,
                "print_c1_p50_ms": 5,
                "sympy_c1_p50_ms": 20,
            },
        },
    )
    print(
        f"memory (PSS): {mem['forkserver_pss_mb_per_worker']} MB per numpy/sympy worker, "
        f"{mem['light_forkserver_pss_mb']} MB light worker, {mem['numpy_forkserver_pss_mb']} MB numpy worker; "
        f"results: {path}"
    )


if __name__ == "__main__":
    main()
