"""The collective weight transport's pieces without Ray: the backend choice, the bucket plan, and a
gloo group of three members in threads of this process (a sender and two receivers)."""

from __future__ import annotations

import threading

import pytest
import torch

from zerotir.config import ConfigError, build_config
from zerotir.distributed.transport import Entry, WeightGroup, buckets, free_endpoint, pick_backend


def test_nccl_only_when_every_member_has_a_gpu():
    assert pick_backend(1, 1, "cuda") == "nccl"
    assert pick_backend(1, 0.5, "cuda:0") == "nccl"
    assert pick_backend(0, 0, "cpu") == "gloo"
    assert pick_backend(1, 0, "cuda") == "gloo"  # CPU rollout workers: NCCL cannot reach them
    assert pick_backend(0, 1, "cuda") == "gloo"  # a CPU learner
    assert pick_backend(1, 1, "cpu") == "gloo"  # GPUs reserved but the learner trains on CPU


def test_buckets_are_same_dtype_runs_under_the_cap():
    spec = [Entry("a", (4,), "torch.float32"), Entry("b", (2,), "torch.float32"),
            Entry("c", (3,), "torch.bfloat16"), Entry("d", (10,), "torch.float32"),
            Entry("e", (1,), "torch.float32")]  # fmt: skip
    plan = buckets(spec, cap=24)
    assert [[e.name for e in b] for b in plan] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [e for b in plan for e in b] == spec  # order kept: the receiver's views follow the sender's


def _run_group(broadcasts: list[dict[str, torch.Tensor]], receivers: int = 2, cap: int | None = None):
    """Rank 0 sends `broadcasts` (version = index + 3); returns, per receiver, what it saw after each."""
    host, port = free_endpoint()
    seen: dict[int, list] = {}
    errors: list[BaseException] = []

    def member(rank: int) -> None:
        try:
            g = WeightGroup(host, port, receivers + 1, rank, "gloo", timeout_s=60)
            if rank == 0:
                for v, sd in enumerate(broadcasts):
                    g.send(sd, v + 3)
            else:
                seen[rank] = []
                for _ in broadcasts:
                    version = g.receive()
                    ptrs = {k: t.data_ptr() for k, t in g.buffers.items()}
                    seen[rank].append((version, {k: t.clone() for k, t in g.buffers.items()}, ptrs))
            g.close()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(receivers + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return seen


def test_a_gloo_group_delivers_every_tensor_and_version_into_reused_buffers():
    g = torch.Generator().manual_seed(0)
    first = {"w": torch.randn(3, 5, generator=g), "h": torch.randn(7, generator=g).to(torch.bfloat16),
             "n": torch.arange(4), "b": torch.randn(2, 2, generator=g)}  # fmt: skip
    second = {k: v * 2 + 1 for k, v in first.items()}
    seen = _run_group([first, second])
    for rank in (1, 2):
        (v1, got1, ptrs1), (v2, got2, ptrs2) = seen[rank]
        assert (v1, v2) == (3, 4)
        for k in first:
            assert got1[k].dtype == first[k].dtype and torch.equal(got1[k], first[k]), k
            assert torch.equal(got2[k], second[k]), k
        assert ptrs1 == ptrs2  # same shapes: the second broadcast landed in the first one's buffers


def test_a_changed_state_dict_resends_its_spec():
    first = {"w": torch.ones(2, 3)}
    second = {"w": torch.zeros(4), "extra": torch.full((2,), 5.0)}
    seen = _run_group([first, second], receivers=1)
    (_, got1, _), (_, got2, _) = seen[1]
    assert set(got1) == {"w"} and set(got2) == {"w", "extra"}
    assert torch.equal(got2["w"], torch.zeros(4)) and torch.equal(got2["extra"], torch.full((2,), 5.0))


def test_collective_with_colocated_gpus_is_refused_at_config_time():
    ov = ["distributed.enabled=true", "distributed.weight_transport=collective", "distributed.layout=colocated",
          "distributed.learner_gpus=1", "distributed.rollout_gpus=1"]  # fmt: skip
    with pytest.raises((ConfigError, ValueError), match="NCCL refuses two ranks"):
        build_config("toy-zerotir", overrides=ov)
    # the same layout without GPUs (gloo) and disaggregated GPUs are fine
    build_config("toy-zerotir", overrides=ov[:3])
    build_config("toy-zerotir", overrides=[*ov[:2], *ov[3:]])
