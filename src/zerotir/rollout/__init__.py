"""Tool-integrated rollout: templates, engines and the generate/execute/inject loop."""

from zerotir.rollout.engine import Completion, Engine, SamplingParams
from zerotir.rollout.metrics import rollout_metrics
from zerotir.rollout.protocol import TEMPLATES, Template, get_template
from zerotir.rollout.tool_loop import ToolLoopConfig, run_tool_rollout

__all__ = [
    "Completion",
    "Engine",
    "SamplingParams",
    "TEMPLATES",
    "Template",
    "get_template",
    "ToolLoopConfig",
    "run_tool_rollout",
    "rollout_metrics",
]
