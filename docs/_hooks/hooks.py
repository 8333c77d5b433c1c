"""MkDocs hooks: generated reference pages, added to the site at build time (never written to docs/).

- `reference/config.md` from the pydantic config models; a field without a doc line is logged at the
  level named by `extra.undocumented_config_fields` in mkdocs.yml (`warn`, the default, fails
  `mkdocs build --strict`; `info` only reports).
- `reference/cli.md` from `zerotir.cli.build_parser()`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))

import refgen  # noqa: E402

log = logging.getLogger("mkdocs.plugins.zerotir_refgen")


def on_files(files, config):
    page, undocumented = refgen.config_reference()
    if undocumented:
        level = config.get("extra", {}).get("undocumented_config_fields", "warn")
        emit = log.warning if level == "warn" else log.info
        emit(
            "%d config fields have no doc line (Field(description=...) or attribute docstring): %s",
            len(undocumented),
            ", ".join(undocumented),
        )
    for uri, content in (("reference/config.md", page), ("reference/cli.md", refgen.cli_reference())):
        files.append(File.generated(config, uri, content=content))
    return files
