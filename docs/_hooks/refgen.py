"""Generate the configuration and CLI reference pages from the code itself.

`config_reference()` walks the pydantic models under `zerotir.config.RunConfig`: every key with its
type, default, constraints and one-line doc (the field's `Field(description=...)`, else the string
literal right under the attribute, else nothing - those fields are returned so the build can warn).
`cli_reference()` walks the argparse tree of `zerotir.cli.build_parser()`. Both are plain functions
so that tests can call them without MkDocs; `docs/_hooks/hooks.py` puts their output into the site.
"""

from __future__ import annotations

import argparse
import ast
import enum
import functools
import inspect
import os
import textwrap
import types
import typing
from dataclasses import dataclass

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


@dataclass(frozen=True)
class FieldDoc:
    key: str
    type: str
    default: str
    constraints: str
    doc: str


@functools.cache
def attribute_docstrings(cls: type) -> dict[str, str]:
    """The string literal written right under each annotated attribute of `cls` (PEP 257 style)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[node.target.id] = inspect.cleandoc(nxt.value.value)
    return out


def field_doc(model: type[BaseModel], name: str) -> str:
    """Field(description=...) first, then the attribute docstring (also of base classes)."""
    desc = model.model_fields[name].description
    if desc:
        return inspect.cleandoc(desc)
    for klass in model.__mro__:
        if issubclass(klass, BaseModel) and klass is not BaseModel:
            doc = attribute_docstrings(klass).get(name)
            if doc:
                return doc
    return ""


def type_name(ann: object) -> str:
    """A short, readable rendering of a type annotation."""
    if ann is type(None):
        return "null"
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in typing.get_args(ann))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(ann))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return " \\| ".join(f'`"{m.value}"`' for m in ann)
    return getattr(ann, "__name__", str(ann))


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "`null`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`"


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _constraints(field) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in _BOUNDS.items():
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
    return ", ".join(parts)


def _section_model(ann: object) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def walk_config(
    model: type[BaseModel], prefix: str = ""
) -> list[tuple[str, type[BaseModel], list[FieldDoc]]]:
    """[(section key, section model, its leaf fields)] in declaration order, depth first."""
    leaves: list[FieldDoc] = []
    nested: list[tuple[str, type[BaseModel], list[FieldDoc]]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _section_model(field.annotation)
        if sub is not None:
            nested += walk_config(sub, key + ".")
            continue
        leaves.append(
            FieldDoc(
                key, type_name(field.annotation), _default(field), _constraints(field), field_doc(model, name)
            )
        )
    head = [(prefix.rstrip("."), model, leaves)] if leaves else []
    return head + nested


def _cell(s: str) -> str:
    """Safe inside a Markdown table cell: pipes escaped, one line, `<...>` shown (outside code spans)."""
    parts = s.replace("|", "\\|").replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def config_reference() -> tuple[str, list[str]]:
    """(Markdown page, keys without a doc line)."""
    from zerotir.config import RunConfig

    undocumented: list[str] = []
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by docs/_hooks/refgen.py from src/zerotir/config.py: do not edit by hand -->",
        "",
        "Every key of a run configuration, generated from the pydantic models in `zerotir.config` at",
        "build time, so it cannot drift from the code. Set keys in a YAML file (`--config`), a preset",
        "(`--preset`) or on the command line as `section.key=value`; see [Configuration](../concepts/config.md).",
        "Constraints are enforced when the config is built; an unknown key fails with the nearest valid one.",
        "",
    ]
    for section, model, fields in walk_config(RunConfig):
        lines += [f"## `{section}`" if section else "## Top level", ""]
        doc = inspect.getdoc(model)
        if doc and model.__doc__ and "Usage docs:" not in doc:
            lines += [doc.split("\n\n")[0], ""]
        lines += ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
        for f in fields:
            if not f.doc:
                undocumented.append(f.key)
            doc_cell = _cell(f.doc) if f.doc else "*(no doc line yet)*"
            lines.append(
                f"| `{f.key}` | {f.type} | {_cell(f.default)} | {_cell(f.constraints)} | {doc_cell} |"
            )
        lines.append("")
    if undocumented:
        lines += [
            "## Fields without a doc line",
            "",
            "These fields have neither `Field(description=...)` nor an attribute docstring; the docs",
            "build reports them.",
            "",
            *[f"- `{k}`" for k in undocumented],
            "",
        ]
    return "\n".join(lines), undocumented


def _flags(action: argparse.Action) -> str:
    if action.option_strings:
        return ", ".join(f"`{s}`" for s in action.option_strings)
    return f"`{action.metavar or action.dest}`"


def _action_default(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "flag"
    if not action.option_strings and action.nargs in ("*", "?"):
        return "optional"
    if action.default in (None, argparse.SUPPRESS) or action.required:
        return "required" if action.required else "–"
    return f"`{action.default}`"


def _command_section(parser: argparse.ArgumentParser, path: list[str], level: int) -> list[str]:
    lines = [f"{'#' * level} `{' '.join(path)}`", ""]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {}
    for s in subs:
        helps = {c.dest: c.help for c in s._choices_actions}
    desc = parser.description if level > 1 else None
    if desc and not desc.startswith("Agent RL"):
        lines += [desc, ""]
    if level > 1:
        lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = [
        a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
    ]
    if rows:
        lines += ["| argument | default | choices | help |", "|---|---|---|---|"]
        for a in rows:
            choices = ", ".join(f"`{c}`" for c in a.choices) if a.choices else ""
            lines.append(f"| {_flags(a)} | {_action_default(a)} | {choices} | {_cell(a.help or '')} |")
        lines.append("")
    for s in subs:
        for name, sub in s.choices.items():
            if helps.get(name):
                sub.description = sub.description or helps[name]
            lines += _command_section(sub, [*path, name], min(level + 1, 4))
    return lines


def cli_reference() -> str:
    """Markdown for every command and option of `zerotir`, from the real parser."""
    from zerotir.cli import build_parser

    # argparse wraps usage to the terminal's width: keep the page the same wherever it is built
    saved, os.environ["COLUMNS"] = os.environ.get("COLUMNS"), "100"
    try:
        return _cli_page(build_parser())
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _cli_page(parser: argparse.ArgumentParser) -> str:
    lines = [
        "# CLI reference",
        "",
        "<!-- generated by docs/_hooks/refgen.py from zerotir.cli.build_parser(): do not edit by hand -->",
        "",
        "Generated from `zerotir.cli.build_parser()` when the docs are built. `zerotir COMMAND --help`",
        "prints the same. Commands that take a configuration accept `section.key=value` overrides",
        "(see the [configuration reference](config.md)).",
        "",
        "```text",
        parser.format_help().strip(),
        "```",
        "",
    ]
    return "\n".join(lines + _command_section(parser, ["zerotir"], 1)[2:])
