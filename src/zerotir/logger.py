"""Metrics logging: JSONL per step (the single source analysis reads), TensorBoard, optional W&B."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLogger:
    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "zerotir",
        run_name: str = "run",
        config: dict | None = None,
        resume_from_step: int | None = None,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None:
            drop_steps_from(self.path, resume_from_step)
        self._f = open(self.path, "a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except Exception as e:  # noqa: BLE001 - tensorboard is optional at run time
                log.warning("TensorBoard disabled: %s", e)
        self.wandb = None
        if wandb:
            try:
                import wandb as _wandb

                self.wandb = _wandb.init(
                    project=wandb_project, name=run_name, config=config or {}, resume="allow"
                )
            except Exception as e:  # noqa: BLE001
                log.warning("W&B disabled: %s", e)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {
            "step": step,
            **{k: _clean(float(v)) if isinstance(v, (int, float)) else v for k, v in metrics.items()},
        }
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self.tb.add_scalar(k, float(v), step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def drop_steps_from(path: Path, step: int) -> None:
    """Keep only the records of a JSONL file (metrics, samples) before `step`: the rest were
    written by a run that died after its last checkpoint, and the resumed run writes them again.
    A line cut by the crash goes too."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(ln).get("step", -1) < step:
                keep.append(ln)
        except (json.JSONDecodeError, AttributeError):
            continue
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = []
    for ln in p.read_text().splitlines():
        if ln.strip():
            try:
                rows.append(json.loads(ln))
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
    return rows
