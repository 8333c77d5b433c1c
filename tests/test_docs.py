"""The documentation cannot rot: its examples run, its commands parse, its configs validate, and the
site builds with warnings as errors (broken internal links and anchors included; no network).

- every ```pycon block of a page is doctested (the blocks of one page share their names, in order);
- every `zerotir ...` line of a ```bash block parses with the real CLI parser, and its
  `key=value` overrides and `--preset` names are checked against the config;
- every ```yaml block titled `*.yaml` is built as a run config;
- `mkdocs build --strict` builds the site into a temporary directory.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from zerotir.cli import build_parser
from zerotir.config import build_config, list_presets, parse_overrides

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\n?', re.MULTILINE)


def _expand_snippets(body: str) -> str:
    """A `--8<-- "path"` line (pymdownx.snippets, paths from the repository root) becomes the file's
    text, so that a block shows and the tests check the same shipped file."""
    return SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(), body)


def blocks(page: Path, lang: str) -> list[tuple[int, str, str]]:
    """(line number, fence attributes, body) of each fenced block in `lang`, snippets expanded."""
    text = page.read_text()
    return [
        (text[: m.start()].count("\n") + 1, m.group(2), _expand_snippets(m.group(3)))
        for m in FENCE.finditer(text)
        if m.group(1) == lang
    ]


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_pages_found():
    assert len(PAGES) >= 10, PAGES


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "pycon")], ids=_rel)
def test_pycon_examples_run(page, monkeypatch):
    # Examples run from the repository root (paths like docs/examples/...) and may extend sys.path.
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs: dict = {"__name__": "__docs__"}
    for lineno, _, body in blocks(page, "pycon"):
        test = parser.get_doctest(body, globs, f"{_rel(page)}:{lineno}", str(page), lineno)
        runner.run(test, out=sys.stdout.write, clear_globs=False)
        globs = test.globs  # get_doctest copies: carry the names on to the next block
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {_rel(page)} (see stdout)"


def _logical_lines(body: str) -> list[tuple[int, str]]:
    """(index of the first physical line, text) with `\\`-continued lines joined, as a shell reads them."""
    out: list[tuple[int, str]] = []
    start, parts = 0, []
    for i, line in enumerate(body.splitlines()):
        if not parts:
            start = i
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        out.append((start, " ".join([*parts, line])))
        parts = []
    if parts:
        out.append((start, " ".join(parts)))
    return out


def _command_lines(page: Path) -> list[tuple[int, list[str]]]:
    out = []
    for lineno, _, body in blocks(page, "bash"):
        for i, line in _logical_lines(body):
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # `PYTHONPATH=... zerotir ...`
                words = words[1:]
            if words[:1] == ["zerotir"]:
                out.append((lineno + 1 + i, words[1:]))
    return out


@pytest.mark.parametrize("page", [p for p in PAGES if _command_lines(p)], ids=_rel)
def test_documented_commands_parse(page):
    parser = build_parser()
    presets = set(list_presets())
    for lineno, argv in _command_lines(page):
        where = f"{_rel(page)}:{lineno}: zerotir {' '.join(argv)}"
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"{where}: does not parse") from e
        if getattr(args, "preset", None):
            assert args.preset in presets, f"{where}: unknown preset {args.preset}"
        overrides = getattr(args, "overrides", None) or []
        parse_overrides(overrides)  # raises ConfigError naming the bad key
        if args.command == "train" and args.preset and not args.config:
            build_config(args.preset, overrides=overrides)


def _yaml_configs():
    for page in PAGES:
        for lineno, attrs, body in blocks(page, "yaml"):
            m = re.search(r'title="([^"]+\.yaml)"', attrs)
            if m:
                yield pytest.param(body, id=f"{_rel(page)}:{lineno}:{m.group(1)}")


@pytest.mark.parametrize("body", list(_yaml_configs()))
def test_documented_configs_validate(body, tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text(body)
    build_config(config_file=f)


def test_site_builds_strict(tmp_path):
    try:
        import material  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as e:
        pytest.fail(f"the docs toolchain is missing ({e}); install it with: pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "reference" / "config" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()


def test_config_generator_reads_descriptions_and_docstrings_and_lists_the_rest():
    sys.path.insert(0, str(DOCS / "_hooks"))
    import refgen
    from pydantic import BaseModel, Field

    class Section(BaseModel):
        a: int = Field(1, ge=0, description="From Field.")
        b: str = "x"
        """From the attribute docstring."""
        c: bool = False

    class Root(BaseModel):
        s: Section = Section()

    [(key, _, fields)] = refgen.walk_config(Root)
    assert key == "s"
    by_key = {f.key: f for f in fields}
    assert by_key["s.a"].doc == "From Field." and by_key["s.a"].constraints == "≥ 0"
    assert by_key["s.b"].doc == "From the attribute docstring." and by_key["s.b"].default == '`"x"`'
    assert by_key["s.c"].doc == "" and by_key["s.c"].default == "`false`"


def test_config_reference_covers_every_field():
    sys.path.insert(0, str(DOCS / "_hooks"))
    import refgen
    from pydantic import BaseModel

    from zerotir.config import RunConfig

    def leaves(model, prefix=""):
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                yield from leaves(ann, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    page, _ = refgen.config_reference()
    missing = [k for k in leaves(RunConfig) if f"| `{k}` |" not in page]
    assert not missing, missing


@pytest.mark.parametrize("level", ["warn", "info"])
def test_undocumented_fields_are_reported_at_the_configured_level(level, monkeypatch, caplog):
    pytest.importorskip("mkdocs")
    import logging

    from mkdocs.config import load_config
    from mkdocs.structure.files import Files

    sys.path.insert(0, str(DOCS / "_hooks"))
    import hooks

    monkeypatch.setattr(hooks.refgen, "config_reference", lambda: ("# page", ["algo.made_up"]))
    cfg = load_config(str(ROOT / "mkdocs.yml"))
    cfg["extra"]["undocumented_config_fields"] = level
    cfg.plugins._current_plugin = None  # set by mkdocs while it runs hooks; File.generated reads it
    with caplog.at_level(logging.INFO, logger="mkdocs"):
        files = hooks.on_files(Files([]), cfg)
    [rec] = [r for r in caplog.records if "algo.made_up" in r.getMessage()]
    assert rec.levelno == (logging.WARNING if level == "warn" else logging.INFO)
    assert {f.src_uri for f in files} == {"reference/config.md", "reference/cli.md"}


def test_a_new_undocumented_config_field_fails_the_strict_build():
    """Every field has a doc line, so mkdocs.yml reports a missing one as a warning (`--strict`
    turns it into a failed build) instead of only listing it."""
    pytest.importorskip("mkdocs")
    from mkdocs.config import load_config

    from zerotir.config import undocumented_fields

    assert undocumented_fields() == []
    assert load_config(str(ROOT / "mkdocs.yml"))["extra"]["undocumented_config_fields"] == "warn"


def test_snippet_lines_are_expanded_from_the_repository():
    body = _expand_snippets('--8<-- "docs/examples/custom-run.yaml"\n')
    assert body == (ROOT / "docs/examples/custom-run.yaml").read_text()
    assert "rollout:" in body
