"""Time per weight sync, Ray object store vs a torch.distributed broadcast (gloo on CPU).

    python bench/weight_transport.py [--workers 2] [--repeats 20] [--smoke] [overrides ...]

One sync is what the driver does after an update in a synchronous run: `learner.state_dict()` then
`RolloutPool.load_weights(...)`, which returns when every rollout worker holds the new tensors (in
its process, queued for its next job; the copy into the engine's model is the same for both and not
timed here). object_store: the learner puts its state dict in the object store, every worker fetches
it. collective: learner rank 0 broadcasts over the weight group into each worker's preallocated
buffers. The learner and workers are the real actors of a run (`start_learners`, `RolloutPool`) on a
local Ray instance; the first sync of each transport is a warm-up and excluded. Writes
bench/results/weight_transport.json (machine details and load from bench/_common.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _bump(host) -> int:
    """In the learner actor: count one more update."""
    host.learner.inner.version += 1
    return host.learner.inner.version


def run(transport: str, workers: int, repeats: int, overrides: list[str]) -> dict:
    import ray
    from _common import bench_config

    from zerotir.distributed.driver import RolloutPool, start_learners
    from zerotir.distributed.placement import Placement
    from zerotir.models import load_tokenizer

    cfg = bench_config("toy-zerotir", [
        "trainer.threads=1", "distributed.enabled=true", f"distributed.rollout_workers={workers}",
        "distributed.rollout_cpus=0", "distributed.learner_cpus=0", f"distributed.weight_transport={transport}",
    ], overrides)  # fmt: skip
    placement = Placement(cfg.distributed)
    learner = start_learners(cfg, cfg.model.path, placement)
    pool = RolloutPool(cfg, cfg.model.path, load_tokenizer(cfg.model.path), placement, learner.actors)
    try:
        sd = ray.get(learner.actor.state_dict.remote())
        size = {
            "tensors": len(sd),
            "parameters": sum(t.numel() for t in sd.values()),
            "bytes": sum(t.numel() * t.element_size() for t in sd.values()),
            "dtypes": sorted({str(t.dtype) for t in sd.values()}),
        }
        times = []
        for k in range(repeats + 1):
            # as after an update: both sides count one more version (workers queue only newer ones;
            # the collective transport sends the learner actor's own version), not timed
            ray.get(learner.actor.__ray_call__.remote(_bump))
            learner.version += 1
            t0 = time.perf_counter()
            pool.load_weights(learner.state_dict())
            if k:
                times.append(time.perf_counter() - t0)
        held = ray.get([w.__ray_call__.remote(lambda self: self._newest_version()) for w in pool.workers])
    finally:
        pool.close()
        for a in learner.actors:
            ray.kill(a, no_restart=True)
        placement.remove()
    return {
        "transport": transport,
        "backend": pool.collective.backend if pool.collective else None,
        "workers": workers,
        "model": size,
        "sync_s_median": statistics.median(times),
        "sync_s_min": min(times),
        "sync_s_max": max(times),
        "worker_versions_after": held,
        "raw_s": times,
    }


def main() -> None:
    from _common import add_config_args, write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--transports", nargs="+", default=["object_store", "collective"])
    ap.add_argument("--smoke", action="store_true", help="1 worker, 1 timed sync (the test suite's check)")
    add_config_args(ap)
    a = ap.parse_args()
    if a.smoke:
        a.workers, a.repeats = 1, 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    load0 = os.getloadavg()
    runs = []
    for t in a.transports:
        r = run(t, a.workers, a.repeats, a.overrides)
        print({k: v for k, v in r.items() if k != "raw_s"}, flush=True)
        runs.append(r)
    ray.shutdown()
    path = write_result("weight_transport", {
        "load_avg_before": load0, "load_avg_after": os.getloadavg(),
        "note": "shared 2-core machine, local Ray; a sync ends when every worker holds the tensors",
        "settings": vars(a), "runs": runs,
    })  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
