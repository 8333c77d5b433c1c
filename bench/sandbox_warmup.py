"""Does the fork server's warm-up carry over to code it has never seen?

Three pools in the same run, alternating: the default warm-up (`PoolConfig.warmup`), the same
library machinery exercised with symbol names nobody uses (zerotir's earlier warm-up), and imports
only. Each runs nine held-out sympy snippets (typical model-written math code that
appears nowhere in the warm-up text) plus the `bench/sandbox.py` sympy snippet; the time is measured
inside the fork server (`ToolCall.seconds`, fork to exit), medians per snippet over the rounds.
Results: bench/results/sandbox_warmup.json.

The pools are built from the config's `sandbox` section through `zerotir.build` (1 worker, 4 slots,
no light or numpy worker); the arms differ only in `PoolConfig.warmup`, which the benchmark sets.

    python bench/sandbox_warmup.py [--rounds 7] [--smoke] [sandbox.key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_config_args, bench_config, write_result  # noqa: E402
from sandbox import SNIPPETS  # noqa: E402

from zerotir import build  # noqa: E402
from zerotir.sandbox.pool import NUMPY_WARMUP, ExecutorPool  # noqa: E402

HELDOUT = [
    "from sympy import *\nx = symbols('x')\nprint(solve(x**3 - 6*x**2 + 11*x - 6, x))",
    "from sympy import symbols, Eq, solve\na, b = symbols('a b')\nprint(solve([Eq(a + b, 10), Eq(a - b, 2)], [a, b]))",
    "import sympy as sp\nn = sp.symbols('n', integer=True, positive=True)\nprint(sp.summation(1/(n*(n+1)), (n, 1, sp.oo)))",
    "from sympy import factorint, divisors, totient\nprint(factorint(2024), len(divisors(2024)), totient(2024))",
    "import sympy as sp\nx = sp.Symbol('x')\nprint(sp.simplify((x**2 - 4)/(x - 2)), sp.expand((x + 1)**5))",
    "from sympy import Rational, sqrt, nsimplify\nprint(Rational(1, 3) + Rational(1, 6), sqrt(50), nsimplify(0.125))",
    "import sympy as sp\nx = sp.symbols('x')\nprint(sp.integrate(sp.sin(x)**2, (x, 0, sp.pi)), sp.diff(sp.exp(x**2), x))",
    "from sympy import binomial, factorial\nprint(binomial(10, 4), factorial(7) // factorial(4))",
    "import sympy as sp\nx, y = sp.symbols('x y')\nprint(sp.factor(x**2 - y**2), sp.simplify(sp.cos(2*x) + 2*sp.sin(x)**2))",
]


# The warm-up zerotir shipped before (same machinery, symbol names no user writes): the difference
# to the default is what keeping common symbols and expressions in sympy's caches buys.
MACHINERY_ONLY = (
    "import sympy as _sp\n_w, _z = _sp.symbols('w z')\n_sp.solve(_w**2 - 3*_w - 10, _w)\n"
    "_sp.simplify(_sp.tan(_z)**2 + 1); _sp.factor(_w**3 - 1); _sp.expand((_w + 2)**3)\n"
    "_sp.integrate(_w**2, (_w, 0, 3)); _sp.Rational(3, 7) + _sp.sqrt(8); _sp.nsimplify(0.375)\n"
    "_sp.Matrix([[1, 2], [3, 5]]).det(); _sp.N(_sp.pi, 20); _sp.isprime(97); _sp.binomial(10, 3)\n"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="one round, two held-out snippets: only checks that it runs")
    add_config_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.rounds = 1
    fixed = ["sandbox.workers=1", "sandbox.slots=4", "sandbox.light_worker=false", "sandbox.numpy_worker=false"]
    base = build.pool_config(bench_config(None, fixed, args.overrides))
    arms = {
        "imports_only": ExecutorPool(replace(base, warmup="")),
        "machinery_only": ExecutorPool(replace(base, warmup=NUMPY_WARMUP + MACHINERY_ONLY)),
        "default_warmup": ExecutorPool(base),
    }
    heldout = HELDOUT[:2] if args.smoke else HELDOUT
    snippets = {"bench_sympy": SNIPPETS["sympy"], **{f"heldout_{i}": s for i, s in enumerate(heldout)}}
    ms: dict[str, dict[str, list[float]]] = {a: {s: [] for s in snippets} for a in arms}
    names = list(arms)
    for rnd in range(args.rounds):
        for s, code in snippets.items():
            for a in names if rnd % 2 == 0 else names[::-1]:
                r = arms[a].run(code, timeout_s=60)
                if r.status != "ok":
                    raise SystemExit(f"{a} {s}: {r.status}\n{r.stderr}")
                ms[a][s].append(1000 * r.seconds)
    for pool in arms.values():
        pool.close()
    med = {a: {s: statistics.median(v) for s, v in d.items()} for a, d in ms.items()}
    held = [s for s in snippets if s.startswith("heldout")]
    summary = {
        a: {
            "heldout_sum_ms": round(sum(med[a][s] for s in held), 1),
            "bench_sympy_ms": round(med[a]["bench_sympy"], 1),
        }
        for a in arms
    }
    base = summary["imports_only"]
    for a in arms:
        summary[a]["heldout_vs_imports_only"] = round(
            summary[a]["heldout_sum_ms"] / base["heldout_sum_ms"], 3
        )
        print(
            f"{a:18s} held-out total {summary[a]['heldout_sum_ms']:7.1f} ms "
            f"(x{summary[a]['heldout_vs_imports_only']:.2f} of imports only), "
            f"bench sympy snippet {summary[a]['bench_sympy_ms']:.1f} ms"
        )
    path = write_result(
        "sandbox_warmup",
        {"rounds": args.rounds, "median_ms": med, "summary": summary, "heldout_snippets": heldout},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
