import pytest

from conftest import run_cli
from zerotir import cli
from zerotir.config import ConfigError, build_config, list_presets


def test_every_preset_resolves():
    names = list_presets()
    assert {
        "toy-zerotir",
        "toy-zerorl",
        "qwen2.5-7b-zerotir",
        "qwen2.5-7b-zerorl",
        "qwen2.5-1.5b-zerotir",
        "qwen2.5-1.5b-zerorl",
    } <= set(names)
    for n in names:
        cfg = build_config(n)
        if n.endswith("zerorl"):
            assert cfg.rollout.max_tool_calls == 0 and "zerorl" in cfg.rollout.template


def test_paper_hyperparameters_in_7b_preset():
    c = build_config("qwen2.5-7b-zerotir")
    assert (
        c.trainer.prompts_per_step,
        c.algo.group_size,
        c.algo.critic_steps,
        c.trainer.micro_batch_size,
    ) == (128, 16, 12, 1)
    assert (c.algo.lam, c.algo.filter, c.algo.filter_low, c.algo.filter_high) == (
        1.0,
        "accuracy_band",
        0.2,
        0.8,
    )
    assert c.rollout.max_tool_calls == 20 and c.rollout.template == "zerotir"


def test_overrides_are_typed():
    c = build_config(
        "toy-zerotir", overrides=["trainer.total_steps=7", "algo.clip_high=0.3", "rollout.stateful=true"]
    )
    assert c.trainer.total_steps == 7 and c.algo.clip_high == 0.3 and c.rollout.stateful is True


@pytest.mark.parametrize(
    "override,needle",
    [
        ("trainer.totl_steps=3", "did you mean trainer.total_steps"),
        ("trainr.lr=1", "did you mean trainer"),
        ("algo.nme=ppo", "did you mean algo.name"),
        ("trainer.lr=-1", "trainer.lr must be > 0"),
        ("algo.group_size=1", "group_size must be >= 2"),
        ("algo.name=ppo", "set algo.critic_lr"),
        ("algo.name=sac", "algo.name"),
        ("rollout.top_p=2", "rollout.top_p"),
        ("trainer.total_steps", "must look like key.sub=value"),
    ],
)
def test_bad_config_is_rejected_clearly(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        build_config("toy-zerotir", overrides=[override])


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'toy-zerotir'"):
        build_config("toy-zerotr")


def test_yaml_file_typo(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trainer:\n  totl_steps: 3\n")
    with pytest.raises(ConfigError, match="trainer.total_steps"):
        build_config("toy-zerotir", f)


def test_cli_help_and_print_config(capsys):
    r = run_cli("--help")  # the installed entry point once; the rest in-process (a subprocess each: 25 s)
    assert r.returncode == 0
    for sub in ("demo", "train", "eval", "sandbox", "analyze"):
        assert sub in r.stdout
    for sub in (("demo",), ("train",), ("eval",), ("sandbox", "serve"), ("analyze",), ("toy", "pretrain")):
        with pytest.raises(SystemExit) as e:
            cli.main([*sub, "--help"])
        assert e.value.code == 0 and "usage: zerotir" in capsys.readouterr().out
    for preset in list_presets():
        assert cli.main(["train", "--preset", preset, "--print-config"]) == 0
        assert f"name: {preset}" in capsys.readouterr().out


def test_eval_print_config_shows_what_eval_resolves(capsys):
    """`zerotir eval` lays its own defaults (eval.seed 42, eval.batch_size 32) under the preset, so the
    preset's `train --print-config` does not show what an eval runs with; `eval --print-config` does,
    with flags on top, and needs no --model to say it."""
    import yaml

    assert cli.main(["train", "--preset", "toy-zerotir", "--print-config"]) == 0
    train = yaml.safe_load(capsys.readouterr().out)
    assert cli.main(["eval", "--preset", "toy-zerotir", "--print-config"]) == 0
    ev = yaml.safe_load(capsys.readouterr().out)
    assert (train["eval"]["seed"], ev["eval"]["seed"]) == (None, 42)
    assert ev["eval"]["batch_size"] == 32 and ev["model"]["path"] == "toy"
    assert ev["rollout"]["max_tool_calls"] == train["rollout"]["max_tool_calls"]  # the preset's, not eval's 4
    argv = ["eval", "--preset", "toy-zerotir", "--seed", "7", "--batch-size", "5", "--print-config"]
    assert cli.main(argv) == 0
    ev = yaml.safe_load(capsys.readouterr().out)
    assert (ev["eval"]["seed"], ev["eval"]["batch_size"]) == (7, 5)


def test_cli_typo_exit_code_and_message():
    r = run_cli("train", "--preset", "toy-zerotir", "--run-dir", "/tmp/never", "trainer.totl_steps=3")
    assert r.returncode == 2
    assert "did you mean trainer.total_steps" in r.stderr


def test_cli_missing_model_path(tmp_path):
    r = run_cli(
        "train", "--preset", "toy-zerotir", "--run-dir", str(tmp_path / "r"), f"model.path={tmp_path}/nope"
    )
    assert r.returncode == 2 and "no config.json" in r.stderr


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["algo.kl_coef=0.1", "algo.kl_in_reward=true"], "algo.name=grpo has no token rewards"),
        (["algo.kl_coef=0.1", "algo.kl_in_reward=true", "algo.name=dr_grpo"], "algo.name=dr_grpo"),
        (["algo.kl_coef=0.1", "algo.kl_in_reward=true", "algo.name=rloo"], "algo.name=rloo"),
        (["rollout.vllm_async=true"], "rollout.vllm_async: only the vLLM engine"),
        (["rollout.vllm_sleep=true"], "rollout.vllm_sleep: only the vLLM engine"),
    ],
)
def test_settings_an_algorithm_or_engine_ignores_are_refused(overrides, needle):
    """No silent no-op knobs (peer lessons §6). With a group estimator, `kl_in_reward` loaded the
    reference model, took the KL out of the loss, and the estimator dropped it: no KL at all. The
    transformers engine ignored the vLLM engine's async and sleep modes."""
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        build_config("toy-zerotir", overrides=overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        ["algo.kl_coef=0.1", "algo.kl_in_reward=true", "algo.name=reinforce_pp"],
        ["algo.kl_coef=0.1", "algo.kl_in_reward=true", "algo.name=reinforce_pp_baseline"],
        ["algo.kl_in_reward=true"],  # no KL to fold
        ["rollout.vllm_async=true", "rollout.engine=vllm"],
    ],
)
def test_the_same_settings_where_they_act_are_accepted(overrides):
    build_config("toy-zerotir", overrides=overrides)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("distributed.off_policy=tis", "distributed.off_policy=tis: only the Ray pipeline"),
        ("distributed.max_staleness=1 distributed.off_policy=behaviour", "distributed.max_staleness=1, "),
    ],
)
def test_ray_only_settings_without_ray_are_one_line_before_anything_is_written(
    tmp_path, capsys, monkeypatch, override, says
):
    """The single-process trainer samples with the current policy every step: a staleness bound and an
    off-policy correction parsed and did nothing there. Refused, exit 2, and no run directory left;
    with --overwrite the old run is not moved aside either. With distributed.enabled=true they reach
    the Ray pipeline."""
    import zerotir.distributed

    run = tmp_path / "r"
    rc = cli.main(["train", "--preset", "toy-zerotir", "--run-dir", str(run), *override.split()])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "distributed.enabled=true" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not run.exists()
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")  # a used run directory
    argv = ["train", "--preset", "toy-zerotir", "--run-dir", str(run), "--overwrite", *override.split()]
    assert cli.main(argv) == 2 and says in capsys.readouterr().err
    assert (run / "metrics.jsonl").exists() and [p.name for p in tmp_path.iterdir()] == ["r"]

    class Dispatched(Exception):
        pass

    def ray_train(cfg, run_dir, resume=False):
        raise Dispatched(cfg.distributed)

    monkeypatch.setattr(zerotir.distributed, "train", ray_train)
    with pytest.raises(Dispatched):
        cli.main(["train", "--preset", "toy-zerotir", "--run-dir", str(tmp_path / "ray"), *override.split(),
                  "distributed.enabled=true"])  # fmt: skip
