"""One learner actor vs FSDP2-sharded learner groups on a local Ray instance (CPU, gloo).

    python bench/sharded_learners.py [--learners 1 2] [--repeats 5] [--batch 16] [--resp-len 64]

Each learner group gets the same synthetic batch (the shipped toy model, fp32); one timed step is
what the driver does per update: `prepare` (with the logprob recomputation), `train_on_batch`, and
the full-state-dict gather that the weight broadcast reads. First step excluded (warm-up). On CPU,
gloo and one thread per rank, sharding is not expected to be faster: it exists for models that do
not fit one device, and every rank recomputes the whole batch's logprobs in `prepare`. Writes
bench/results/sharded_learners.json with the machine's details and load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def batch(n: int, resp_len: int, seed: int = 0):
    from zerotir.types import Trajectory

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        T = rng.randint(resp_len // 2, resp_len)
        mask = [int(rng.random() > 0.2) for _ in range(T)]
        out.append(Trajectory([rng.randint(40, 100) for _ in range(24)], [rng.randint(40, 100) for _ in range(T)],
                              mask, [-rng.uniform(0.5, 4.0) if m else 0.0 for m in mask]))  # fmt: skip
    return out


def run(learners: int, repeats: int, n: int, resp_len: int, micro: int) -> dict:
    import ray
    import torch

    from zerotir.config import build_config
    from zerotir.distributed.driver import start_learners
    from zerotir.distributed.placement import Placement
    from zerotir.train.learner import Advantages

    cfg = build_config("toy-zerotir", overrides=[
        f"trainer.micro_batch_size={micro}", "trainer.threads=1", "distributed.enabled=true",
        f"distributed.learners={learners}", "distributed.learner_cpus=0",
    ])  # fmt: skip
    placement = Placement(cfg.distributed)
    group = start_learners(cfg, cfg.model.path, placement)
    times: dict[str, list[float]] = {"prepare_s": [], "train_s": [], "gather_s": [], "step_s": []}
    try:
        for k in range(repeats + 1):
            trajs = batch(n, resp_len, seed=k)
            t0 = time.perf_counter()
            lb = group.prepare(trajs, recompute=True)
            t1 = time.perf_counter()
            adv = Advantages(torch.randn(lb.tokens.action_mask.shape) * lb.tokens.action_mask)
            group.train_on_batch(lb, adv)
            t2 = time.perf_counter()
            ray.get(group.state_dict().ref)
            t3 = time.perf_counter()
            if k:
                for key, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    times[key].append(v)
    finally:
        for a in group.actors:
            ray.kill(a, no_restart=True)
        placement.remove()
    return {
        "learners": learners,
        **{f"{k}_median": statistics.median(v) for k, v in times.items()},
        "raw": times,
    }


def main() -> None:
    from _common import machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--resp-len", type=int, default=64)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "results" / "sharded_learners.json"))
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    load0 = os.getloadavg()
    runs = []
    for w in a.learners:
        r = run(w, a.repeats, a.batch, a.resp_len, a.micro)
        print(json.dumps({k: v for k, v in r.items() if k != "raw"}), flush=True)
        runs.append(r)
    ray.shutdown()
    res = {
        "machine": {**machine(), "load_avg_before": load0, "load_avg_after": os.getloadavg(),
                    "note": "shared 2-core machine; CPU gloo is not expected to be faster than one learner"},
        "settings": vars(a),
        "runs": runs,
    }  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
