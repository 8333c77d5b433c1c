"""User-facing error types, importable without loading torch (the CLI maps them to exit codes)."""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says why and what to try."""


class SandboxFailureAbort(RuntimeError):
    """Too many trajectories of a step hit sandbox infrastructure failures."""


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT arrived: the current step finished and a checkpoint was saved."""

    def __init__(self, step: int, checkpoint: Path, resume_cmd: str | None = None):
        super().__init__(f"stopped by signal after step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint
        self.resume_cmd = resume_cmd or f"zerotir train --resume {checkpoint.parent.parent}"
        """The command that continues from the checkpoint (the CLI prints it)."""


class MissingExtraError(ImportError):
    """A setting needs an optional package that is not installed (vLLM for `rollout.engine=vllm`, Ray
    for `distributed.enabled`): exit code 2, one line naming the setting and what to install."""


class UsageError(ValueError):
    """A bad command line (a used run directory, an unknown benchmark, a bad port): exit code 2,
    reported in one line before any work starts."""
