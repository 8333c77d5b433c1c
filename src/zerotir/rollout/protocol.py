"""The tool-use protocol: prompt templates, code fences and how execution output is shown.

Facts from the paper and its code (shared/reference/paper_notes.md): the ZeroTIR prompt is the
Open-Reasoner-Zero prompt plus one sentence saying Python code will be executed; generation stops at
an opening ```python fence, then at the closing ```; the result is injected as an ```output block;
long outputs (> 256 tokens) are replaced by a notice; at the tool-call cap a notice says the tool
can no longer be called. Everything here is text-level and model-agnostic: token bookkeeping lives
in `tool_loop.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CODE_OPEN = "```python"
"""The fence the prompts and the toy corpus write; the accepted tags and the grammar: rollout/tools.py."""
CODE_CLOSE = "```"
EXHAUSTED_NOTICE = "\nTool call count has been exhausted. You can no longer call the tool.\n"
TOO_LONG_NOTICE = "The output of the code execution is too long, please check your code."

_TOOL_SENTENCE = (
    "You can use Python code during the solution process, and the code will be executed immediately "
    "and the result will be returned. "
)
_ORZ = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer "
    "here </answer>. User: {tool}You must put your answer inside <answer> </answer> tags, i.e., <answer> "
    "answer here </answer>. And your final answer will be extracted automatically by the \\boxed{{}} tag.\n"
    "This is the problem:{{problem}}\nAssistant: <think>"
)

_ORZ_CUE = "\nAssistant: <think>"

TOY_TOOL_SENTENCE = "Python code in ```python blocks is run and its output is shown.\n"


@dataclass(frozen=True)
class Template:
    """A prompt template and the strings that end a response under it."""

    name: str
    text: str
    uses_tools: bool
    stop: tuple[str, ...] = ()
    cue: str = ""
    """The raw text's closing cue for the answer; dropped inside a chat template (rollout/chat.py),
    where the assistant turn's generation prompt plays its part."""
    response_prefix: str = ""
    """Text the response starts with inside a chat template (the ORZ templates open `<think>`)."""

    def render(self, problem: str) -> str:
        return self.text.replace("{problem}", problem)


TEMPLATES: dict[str, Template] = {
    # The paper's templates (seed repo keys orz_tir_xinji / orz_xinji).
    "zerotir": Template(
        "zerotir", _ORZ.format(tool=_TOOL_SENTENCE), True, ("</answer>",), _ORZ_CUE, "<think>"
    ),
    "zerorl": Template("zerorl", _ORZ.format(tool=""), False, ("</answer>",), _ORZ_CUE, "<think>"),
    # For base models without think tags.
    "boxed": Template(
        "boxed",
        "Question: {problem}\nPlease reason step by step, and put your final answer within \\boxed{}.\nAnswer:",
        False,
        cue="\nAnswer:",
    ),
    "boxed-tir": Template(
        "boxed-tir",
        "Question: {problem}\n"
        + _TOOL_SENTENCE
        + "Please reason step by step, and put your final answer within \\boxed{}.\nAnswer:",
        True,
        cue="\nAnswer:",
    ),
    # The embedded toy world: short prompts so that a tiny model and a laptop CPU suffice.
    "toy-zerotir": Template(
        "toy-zerotir", TOY_TOOL_SENTENCE + "Question: {problem}\nAnswer:", True, cue="\nAnswer:"
    ),
    "toy-zerorl": Template("toy-zerorl", "Question: {problem}\nAnswer:", False, cue="\nAnswer:"),
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown template {name!r}; choose one of {sorted(TEMPLATES)}") from None


def trim_traceback(stderr: str, keep_lines: int = 3) -> str:
    """Keep the last lines of a traceback: the exception line is what the model can act on (ToRL)."""
    lines = [ln for ln in stderr.rstrip("\n").split("\n") if ln.strip()]
    return "\n".join(lines[-keep_lines:])


def format_output(stdout: str, stderr: str, status: str, *, error_lines: int = 3) -> str:
    """The observation text for one execution, before the ```output wrapper."""
    if status == "timeout":
        body = (stdout.rstrip("\n") + "\n" if stdout.strip() else "") + "TimeoutError: execution timed out"
    elif status in ("error", "killed"):
        err = (
            trim_traceback(stderr, error_lines) if stderr.strip() else f"Process ended abnormally ({status})"
        )
        body = (stdout.rstrip("\n") + "\n" if stdout.strip() else "") + err
    else:
        body = stdout.rstrip("\n")
    return body


def wrap_output(body: str) -> str:
    """The injected block, as in the paper's code: \\n```output\\n…\\n```\\n.

    The fence is longer than any backtick run in `body` (CommonMark), so output that prints ```
    cannot close the block early and pass as model text; without backtick runs it is the paper's.
    """
    longest = max((len(r) for r in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"\n{fence}output\n{body}\n{fence}\n"
