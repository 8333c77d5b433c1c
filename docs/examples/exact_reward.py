"""A custom reward for `rollout.reward: exact_reward:score` (docs: "Your own dataset and reward").

A reward is any importable `(response_text, answer) -> float`; 1.0 or more counts as correct in
the metrics. `response_text` is the whole response, injected ```output blocks included, so this one
strips them first: an answer printed by the model's code does not count by itself.
"""

from zerotir.reward import extract_boxed, strip_output_blocks


def score(response_text: str, answer: str) -> float:
    """1 for a boxed answer equal to the reference as a string, 0.1 for any other boxed answer (a
    format bonus), 0 without one."""
    got = extract_boxed(strip_output_blocks(response_text))
    if got is None:
        return 0.0
    return 1.0 if got.strip() == answer.strip() else 0.1
