"""The rollout inspector: stratified sample selection, records, the capped writer, the page, the
CLI and report links, and (marked `browser`) the page driven in headless Chromium by Playwright on a
run produced by a short toy training."""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from zerotir.inspect.page import build_page, render_page, run_payload
from zerotir.inspect.records import build_record, segments, token_pieces, token_roles
from zerotir.inspect.samples import SampleWriter, read_samples, sampling_stride, select_stratified, stratum
from zerotir.rollout.protocol import EXHAUSTED_NOTICE, wrap_output
from zerotir.types import ToolCall, Trajectory


def char_decode(ids):
    return "".join(chr(i) for i in ids)


def traj(parts, correct=False, calls=(), answer="7", prompt="Question: what is 3 + 4?\nAnswer:", reward=None):
    """A trajectory from (text, mask) parts, one token per character (ids are code points)."""
    tr = Trajectory(prompt_ids=[ord(c) for c in prompt])
    for text, m in parts:
        tr.response_ids += [ord(c) for c in text]
        tr.action_mask += [m] * len(text)
        tr.old_logprobs += [-0.5 if m else 0.0] * len(text)
    tr.tool_calls = list(calls)
    tr.text = "".join(t for t, _ in parts)
    tr.correct = correct
    tr.reward = float(correct) if reward is None else reward
    tr.answer = answer
    return tr


CODE = "Let me run it.\n```python\nprint(3 + 4)\n```"
PLAIN_WRONG = [(r"It is \boxed{8}.", 1)]


def code_traj(status="ok", correct=True, notice=True):
    out = "7" if status == "ok" else "ZeroDivisionError: division by zero"
    call = ToolCall(code="print(3 + 4)\n", stdout=out if status == "ok" else "", stderr="" if status == "ok" else out,
                    status=status, seconds=0.012, output=out)
    injected = wrap_output(out) + (EXHAUSTED_NOTICE if notice else "")
    ans = r"So \boxed{7}." if correct else r"So \boxed{0}."
    return traj([(CODE, 1), (injected, 0), (ans, 1)], correct=correct, calls=[call])


# ------------------------------------------------------------------------------ selection
def test_stratified_selection_keeps_rare_strata():
    # 6 plain wrong answers, 1 correct with code, 1 with a tool error: 3 picks must cover all 3 strata.
    trajs = [traj(PLAIN_WRONG) for _ in range(6)] + [code_traj("ok", True), code_traj("error", False)]
    picked = select_stratified(trajs, 3, seed=0)
    assert len(picked) == 3 and picked == sorted(picked)
    assert {stratum(trajs[i]) for i in picked} == {(False, False, False), (True, True, False), (False, True, True)}
    assert select_stratified(trajs, 100) == list(range(8))
    assert select_stratified(trajs, 0) == [] and select_stratified([], 3) == []


def test_stratified_selection_is_deterministic_per_seed():
    trajs = [traj(PLAIN_WRONG) for _ in range(20)]
    assert select_stratified(trajs, 4, seed=3) == select_stratified(trajs, 4, seed=3)
    assert len({tuple(select_stratified(trajs, 4, seed=s)) for s in range(6)}) > 1


def test_sampling_stride_spreads_the_run_cap():
    # 1000 steps x 4 per step = 4000 > 1000: every 4th step; fits already -> every step.
    assert sampling_stride(1000, 4, 1000) == 4
    assert sampling_stride(250, 4, 1000) == 1
    assert sampling_stride(251, 4, 1000) == 2
    assert sampling_stride(10, 0, 1000) == 1


# ------------------------------------------------------------------------------ records
def test_token_roles_split_output_and_exhausted_notice():
    tr = code_traj()
    pieces = token_pieces(char_decode, tr.response_ids)
    assert "".join(pieces) == tr.text
    roles = token_roles(pieces, tr.action_mask)
    segs = segments(pieces, roles)
    assert [s["role"] for s in segs] == ["model", "tool", "notice", "model"]
    assert segs[1]["text"] == wrap_output("7") + "\n"  # the notice's leading newline stays with the output
    assert segs[2]["text"] == EXHAUSTED_NOTICE.lstrip("\n")
    assert segs[0]["end"] == len(CODE) and segs[-1]["text"] == r"So \boxed{7}."


def test_notice_cut_by_the_length_cap_is_still_a_notice():
    cut = wrap_output("7") + EXHAUSTED_NOTICE[:-9]  # "...no longer call the" : the cap hit mid-notice
    pieces = list(cut)
    roles = token_roles(pieces, [0] * len(pieces))
    first = len(wrap_output("7")) + 1  # the notice text starts after its leading newline
    assert set(roles[:first]) == {"tool"} and set(roles[first:]) == {"notice"}
    assert set(token_roles(list(wrap_output("Tool")), [0] * 20)) == {"tool"}  # output that is not a notice


def test_record_carries_tokens_advantages_and_verdict():
    tr = code_traj(correct=False)
    T = len(tr.response_ids)
    adv = [0.5 * m for m in tr.action_mask]
    tlp = [-0.25] * T
    rec = build_record(tr, char_decode, step=3, advantages=adv, trainer_logprobs=tlp, trained=True)
    assert rec["step"] == 3 and rec["policy_version"] == 3
    assert rec["extracted_answer"] == "0" and rec["gold_answer"] == "7" and rec["correct"] is False
    assert rec["tokens"]["mask"] == tr.action_mask and rec["tokens"]["advantages"][0] == 0.5
    assert rec["tokens"]["trainer_logprobs"] == tlp and rec["tokens"]["rollout_logprobs"][0] == -0.5
    assert rec["tool_calls"][0]["status"] == "ok" and rec["tool_calls"][0]["seconds"] == 0.012
    assert rec["model_tokens"] == sum(tr.action_mask) and rec["total_tokens"] == T
    with pytest.raises(ValueError, match="advantages has 2 entries"):
        build_record(tr, char_decode, step=0, advantages=[0.0, 0.0])


def test_extracted_answer_follows_the_grader_rule():
    # The only \boxed is printed by the code: the grader reads model tokens only unless printed answers count.
    tr = traj([(CODE, 1), (wrap_output(r"\boxed{7}"), 0)], calls=[ToolCall(code="x")])
    assert build_record(tr, char_decode, step=0)["extracted_answer"] is None
    assert build_record(tr, char_decode, step=0, allow_printed_answers=True)["extracted_answer"] == "7"


# ------------------------------------------------------------------------------ writer
def test_writer_respects_per_step_and_run_caps_across_resume(tmp_path):
    trajs = [traj(PLAIN_WRONG) for _ in range(10)]
    w = SampleWriter(tmp_path, char_decode, per_step=3, max_per_run=7, total_steps=2)
    assert w.stride == 1
    assert w.record_step(0, trajs) == 3
    assert w.record_step(1, trajs) == 3
    w2 = SampleWriter(tmp_path, char_decode, per_step=3, max_per_run=7, total_steps=3)  # resumed run
    assert w2.written == 6
    assert w2.record_step(2, trajs) == 1  # only one record left in the run budget
    assert w2.record_step(2, trajs) == 0 and not w2.enabled
    recs = read_samples(tmp_path)
    assert [r["step"] for r in recs] == [0, 0, 0, 1, 1, 1, 2]
    assert all(r["trained"] is False and r["tokens"]["advantages"] is None for r in recs)


def test_resume_drops_the_samples_and_metrics_of_steps_it_redoes(tmp_path):
    """A run killed after its checkpoint at step 1 had written samples of steps 1 and 2 (and a torn
    line); resumed, it samples them again. metrics.jsonl was cut back already, samples.jsonl was
    not: the inspector showed step 2 twice (new-user review)."""
    from zerotir.logger import MetricsLogger, read_metrics

    trajs = [traj(PLAIN_WRONG) for _ in range(4)]
    w = SampleWriter(tmp_path, char_decode, per_step=2, max_per_run=100, total_steps=3)
    m = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(3):
        w.record_step(step, trajs)
        m.log(step, {"x": float(step)})
    m.close()
    with (tmp_path / "samples.jsonl").open("a") as f:
        f.write('{"step": 2, "tok')  # cut mid-write by the kill
    resumed = SampleWriter(tmp_path, char_decode, per_step=2, max_per_run=100, total_steps=3, resume_from_step=1)
    assert resumed.written == 2
    MetricsLogger(tmp_path, tensorboard=False, resume_from_step=1).close()
    assert [r["step"] for r in read_samples(tmp_path)] == [0, 0]
    assert [r["step"] for r in read_metrics(tmp_path)] == [0]
    assert resumed.record_step(1, trajs) == 2
    assert [r["step"] for r in read_samples(tmp_path)] == [0, 0, 1, 1]


def test_writer_samples_every_kth_step_and_the_last(tmp_path):
    w = SampleWriter(tmp_path, char_decode, per_step=2, max_per_run=10, total_steps=13)
    assert w.stride == 3
    assert [s for s in range(13) if w.wants(s)] == [0, 3, 6, 9, 12]
    assert not SampleWriter(tmp_path / "off", char_decode, 0, 10, 13).wants(0)


def test_writer_aligns_update_tensors_with_trained_trajectories(tmp_path):
    import torch

    sampled = [traj(PLAIN_WRONG), code_traj()]
    trained = [sampled[1]]  # the first was filtered out by the group filter
    T = len(sampled[1].response_ids)
    adv = torch.full((1, T + 5), 2.0)  # padded to the batch's longest response
    w = SampleWriter(tmp_path, char_decode, per_step=4, max_per_run=10, total_steps=1)
    w.record_step(0, sampled, trained, advantages=adv, trainer_logprobs=torch.zeros(1, T + 5))
    a, b = read_samples(tmp_path)
    assert a["trained"] is False and a["tokens"]["advantages"] is None
    assert b["trained"] is True and b["tokens"]["advantages"] == [2.0] * T


def test_read_samples_skips_a_torn_last_line(tmp_path):
    SampleWriter(tmp_path, char_decode, 2, 10, 1).record_step(0, [traj(PLAIN_WRONG)])
    with (tmp_path / "samples.jsonl").open("a") as f:
        f.write('{"step": 1, "segm')
    assert len(read_samples(tmp_path)) == 1


# ------------------------------------------------------------------------------ page, CLI, report
XSS = "</script><script>window.pwned = 1</script>"


def synthetic_run(run_dir: Path, name: str, steps=(0, 5)) -> Path:
    """A run directory with known samples: code + output + notice, a tool error, a plain answer, and
    model text that tries to close the page's script element."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"name: {name}\n")
    (run_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "reward/accuracy": 0.1 * i, "rollout/code_ratio": 0.2 * i}) + "\n"
            for i, s in enumerate(range(steps[-1] + 1))
        )
    )
    w = SampleWriter(run_dir, char_decode, per_step=8, max_per_run=100, total_steps=steps[-1] + 1)
    for s in steps:
        w.record_step(s, [code_traj("ok", True), code_traj("error", False, notice=False),
                          traj([(XSS + r" \boxed{8}", 1)])])
    return run_dir


def test_page_embeds_untrusted_text_without_closing_the_script(tmp_path):
    html = render_page([run_payload(synthetic_run(tmp_path / "a", "a"))])
    assert XSS not in html and "<\\/script><script>window.pwned" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # no CDN or remote asset


def test_cli_inspect_writes_the_page_and_rejects_a_missing_run(tmp_path):
    run = synthetic_run(tmp_path / "a", "a")
    r = run_cli("inspect", run, "--no-serve", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "inspector.html").stat().st_size > 1000
    r = run_cli("inspect", tmp_path / "nope", "--no-serve")
    assert r.returncode != 0 and "not a run directory" in r.stderr


def test_cli_inspect_serves_only_the_page_on_localhost(tmp_path):
    import re
    import subprocess
    import sys

    import httpx

    run = synthetic_run(tmp_path / "a", "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerotir.cli", "inspect", str(run), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = None
        for _ in range(3):
            m = re.search(r"(http://127\.0\.0\.1:\d+)/inspector\.html", proc.stdout.readline())
            if m:
                url = m.group(1)
                break
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        r = httpx.get(url + "/inspector.html")
        assert r.status_code == 200 and "zerotir rollout inspector" in r.text
        assert httpx.get(url + "/samples.jsonl").status_code == 404  # the run directory is not exposed
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_report_links_sampled_steps_to_the_inspector(tmp_path):
    from zerotir.analysis.report import analyze

    run = synthetic_run(tmp_path / "a", "a")
    rep = analyze([run], tmp_path / "rep")
    html = Path(rep["report_html"]).read_text()
    assert 'href="inspector.html#run=0&amp;step=5"' in html and 'href="inspector.html#run=0&amp;step=0"' in html
    assert (tmp_path / "rep" / "inspector.html").exists()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.jsonl").write_text(json.dumps({"step": 0, "reward/accuracy": 0.5}) + "\n")
    rep = analyze([bare], tmp_path / "rep2")
    assert "inspector.html" not in Path(rep["report_html"]).read_text()


# ------------------------------------------------------------------------------ in a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import playwright.sync_api  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

browser = pytest.mark.skipif(
    not (CHROMIUM and HAVE_PLAYWRIGHT),
    reason="needs the Debian `chromium` package and `pip install playwright` (.ci/run installs both)",
)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """Two steps of toy ZeroTIR training through the CLI (which also writes report/ with the inspector)."""
    d = tmp_path_factory.mktemp("toy") / "run"
    r = run_cli(
        "train", "--preset", "toy-zerotir", "--run-dir", d,
        "trainer.total_steps=2", "trainer.prompts_per_step=4", "algo.group_size=4",
        "trainer.eval_every=0", "trainer.save_every=0", "log.progress=false", "log.tensorboard=false",
        "log.samples_per_step=8",
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return d


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pg = b.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = Path(os.environ.get("ARTIFACT_DIR") or Path(__file__).parent / "artifacts") / "inspect"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cards(page):
    return page.locator("#list .card")


@browser
@pytest.mark.slow
def test_page_on_a_toy_training_run(toy_run, page, artifacts):
    recs = read_samples(toy_run)
    assert 0 < len(recs) <= 16 and {r["step"] for r in recs} == {0, 1}
    assert all(r["tokens"]["trainer_logprobs"] is not None for r in recs if r["trained"])
    page.goto((toy_run / "report" / "inspector.html").as_uri() + "#run=0")
    assert cards(page).count() == len(recs)
    # filtering: step range, outcome, code use
    page.fill("#f-lo", "1")
    page.fill("#f-hi", "1")
    assert cards(page).count() == sum(r["step"] == 1 for r in recs)
    page.click("#f-all")
    page.select_option("#f-outcome", "incorrect")
    assert cards(page).count() == sum(not r["correct"] for r in recs)
    page.select_option("#f-outcome", "")
    page.select_option("#f-code", "yes")
    assert cards(page).count() == sum(bool(r["tool_calls"]) for r in recs)
    page.select_option("#f-code", "")
    # the token view renders one span per response token, injected ones marked
    cards(page).first.click()
    first = recs[0]
    assert page.locator(".tokens .tok").count() == first["total_tokens"]
    assert page.locator(".tokens .tok.inj").count() == first["total_tokens"] - first["model_tokens"]
    with_code = [i for i, r in enumerate(recs) if r["tool_calls"]]
    if with_code:  # the toy base model writes code for a few percent of questions
        cards(page).nth(with_code[0]).click()
        assert page.locator("#detail .codeblock").count() >= 1
        assert page.locator("#detail .seg-tool .nt").first.inner_text().lower() == "not trained on"
    page.select_option("#detail .tok-mode", "gap")
    assert page.locator(".tokens[data-mode=gap]").count() == 1
    page.hover(".tokens .tok >> nth=3")
    assert "trainer logprob" in page.inner_text("#tip")
    page.screenshot(path=str(artifacts / "toy_run.png"), full_page=True)
    # the report's curve links open the inspector at that step
    page.goto((toy_run / "report" / "report.html").as_uri())
    page.click('a[href="inspector.html#run=0&step=1"]')
    page.wait_for_selector("#list .card")
    assert page.input_value("#f-lo") == "1" and page.input_value("#f-hi") == "1"
    assert page.errors == []


@browser
def test_page_shows_code_output_notice_and_compares_runs(tmp_path, page, artifacts):
    a = synthetic_run(tmp_path / "tir", "ZeroTIR")
    b = synthetic_run(tmp_path / "rl", "ZeroRL")
    out, n = build_page([a, b], tmp_path / "inspector.html")
    assert n == 12
    page.goto(out.as_uri() + "#run=0&step=0")
    assert cards(page).count() == 3
    assert page.evaluate("window.pwned") is None
    cards(page).first.click()
    d = page.locator("#detail")
    assert d.locator(".codeblock pre").inner_text().startswith("print(3 + 4)")
    assert d.locator(".seg-tool pre").inner_text() == "```output\n7\n```"
    assert "Tool call count has been exhausted" in d.locator(".seg-notice").inner_text()
    assert d.locator(".seg-tool .nt").inner_text().lower() == "not trained on"
    assert d.locator("[data-field=extracted]").inner_text() == "7" and d.locator("[data-field=gold]").inner_text() == "7"
    rec = read_samples(a)[0]
    inj = rec["total_tokens"] - rec["model_tokens"]
    assert page.locator(".tokens .tok.inj").count() == inj
    assert page.locator('.tokens .tok[data-role="notice"]').count() == len(EXHAUSTED_NOTICE.lstrip("\n"))
    page.screenshot(path=str(artifacts / "trajectory.png"))
    # filters: tool errors, full-text search in code and answers
    page.select_option("#f-tool", "error")
    assert cards(page).count() == 1 and "tool error" in cards(page).first.inner_text()
    page.select_option("#f-tool", "")
    page.fill("#f-q", "pwned")
    assert cards(page).count() == 1 and page.locator("#detail mark").count() >= 1
    page.fill("#f-q", "")
    # same prompt: the two runs side by side, then early vs late within a run
    page.click("#btn-same-prompt")
    cols = page.locator("#compare .col")
    assert cols.count() == 2
    assert "ZeroTIR" in cols.nth(0).inner_text() and "ZeroRL" in cols.nth(1).inner_text()
    page.click("#cmp-early-late")
    assert "step 0 vs step 5" in page.inner_text("#cmp-note")
    page.click("#cmp-two-runs")
    assert "Same question at step 0: ZeroTIR vs ZeroRL" in page.inner_text("#cmp-note")
    page.screenshot(path=str(artifacts / "compare.png"))
    # the advantage colouring is not offered where the sample was not trained on
    page.goto(out.as_uri() + "#run=0&step=5")
    assert page.locator('#detail .tok-mode option[value="adv"]').is_disabled()
    assert page.errors == []
