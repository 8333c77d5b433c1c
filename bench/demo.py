"""Time the full `zerotir demo` (both arms, from the shipped base weights) and record its summary.

The demo builds each arm's trainer from its preset (so through `zerotir.build`); this script only
runs it and judges the summary against the targets.

python bench/demo.py [--out runs/demo-bench] [--quick] [--seeds 3] [--chains]

`--chains` runs `zerotir demo --chains` (the world where a second call helps) and writes
bench/results/demo_chains.json, whose checks add the budget sweep on the held-out chains.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402

from zerotir.demo import baseline_easy_change  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/demo-bench")
    ap.add_argument(
        "--quick", action="store_true", help="`zerotir demo --quick`: only checks that it runs (no targets)"
    )
    ap.add_argument("--seeds", type=int, default=1, help="seeds per arm (means with 95% intervals)")
    ap.add_argument("--chains", action="store_true", help="`zerotir demo --chains`")
    args = ap.parse_args()
    t0 = time.perf_counter()
    quick = (["--quick"] if args.quick else []) + (["--chains"] if args.chains else [])
    # --overwrite: a previous bench run is moved aside to <out>.old-<time>, not mixed into this one
    cmd = [
        sys.executable,
        "-m",
        "zerotir.cli",
        "demo",
        "--out",
        args.out,
        "--overwrite",
        "--seeds",
        str(args.seeds),
        *quick,
    ]
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    name = "demo_chains" if args.chains else "demo"
    if args.quick:  # a few steps per arm: the targets are about the full demo
        print(
            f"{seconds:.0f} s; results: {write_result(name + '_quick', {'seconds': seconds, 'summary': summary})}"
        )
        return
    z, r = summary["zerotir"], summary["zerorl"]
    checks = {
        "demo_under_10_min_per_seed": seconds / args.seeds <= 600,
        "base_code_le_10pct": z["base"]["code_ratio"] <= 0.10,
        "base_hard_le_10pct": z["base"]["accuracy_hard"] <= 0.10,
        "zerotir_code_ge_90pct": z["final"]["code_ratio"] >= 0.90,
        "zerotir_acc_ge_85pct": z["final"]["accuracy"] >= 0.85,
        "zerorl_easy_rises_beyond_ci": baseline_easy_change(summary) == "gain",
        "budget_sweep_monotone": _monotone(z["budget_sweep"]),
        "gap_ge_30_points": z["final"]["accuracy"] - r["final"]["accuracy"] >= 0.30,
        "spearman_ge_0.7": all((v or 0) >= 0.7 for v in z["spearman_vs_step"].values()),
    }
    if args.chains:
        chains = z["budget_sweep_chains"]
        checks["chains_sweep_monotone"] = _monotone(chains)
        checks["chains_gain_1_to_2_to_4"] = (
            chains["1"]["accuracy"] < chains["2"]["accuracy"] < chains["4"]["accuracy"]
        )
        checks["chains_zerotir_ge_85pct"] = z["final_chains"]["accuracy"] >= 0.85
    path = write_result(name, {"seconds": seconds, "seeds": args.seeds, "summary": summary, "checks": checks})
    for k, v in checks.items():
        print(f"{'PASS' if v else 'MISS'} {k}")
    print(f"{seconds:.0f} s; results: {path}")


def _monotone(sweep: dict) -> bool:
    accs = [v["accuracy"] for v in sweep.values()]
    return all(a <= b for a, b in zip(accs, accs[1:]))


if __name__ == "__main__":
    main()
