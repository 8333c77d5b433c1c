"""Print the README's performance table from bench/results/*.json."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def main() -> None:
    rows = ["| benchmark | zerotir | baseline | ratio | target |", "|---|---|---|---|---|"]
    sb = load("sandbox")
    if sb:
        for c in sb["cells"]:
            z, b = c["zerotir"], c["subprocess"]
            target = ""
            if c["concurrency"] == 16:
                target = "≥ 3.5×" if c["snippet"] == "print" else "≥ 25×"
            rows.append(
                f"| sandbox `{c['snippet']}` c={c['concurrency']} (exec/s; p50/p99 ms) | "
                f"{z['throughput_per_s']:.0f}/s; {z['p50_ms']:.1f}/{z['p99_ms']:.1f} | "
                f"`subprocess.run` {b['throughput_per_s']:.1f}/s; {b['p50_ms']:.0f}/{b['p99_ms']:.0f} | "
                f"{c['speedup']:.1f}× | {target} |"
            )
        rows.append(
            f"| sandbox memory per worker (PSS) | {sb['memory']['forkserver_pss_mb_per_worker']} MB | | | |"
        )
    ro = load("rollout")
    if ro:
        rows.append(
            f"| tool rollout time (sandbox excluded) / plain generation, same tokens | "
            f"{sum(ro['tool_generate_s']) / len(ro['tool_generate_s']):.2f} s | "
            f"{sum(ro['plain_s']) / len(ro['plain_s']):.2f} s | {ro['ratio_median']:.3f} | ≤ 1.15 |"
        )
    tr = load("vs_trl")
    if tr:
        z, t = tr["results"]["zerotir"], tr["results"]["trl"]
        rows.append(
            f"| GRPO step, toy model, 8×8 samples (s/step; reward last 4 steps) | {z['sec_per_step']:.2f} s; "
            f"{z['reward_last4']:.3f} | TRL GRPOTrainer {t['sec_per_step']:.2f} s; {t['reward_last4']:.3f} | "
            f"{tr['speedup']:.2f}× | ≥ 1.25× |"
        )
    dm = load("demo")
    if dm:
        rows.append(f"| `zerotir demo` wall clock, both arms | {dm['seconds']:.0f} s | | | ≤ 600 s |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
