"""The README documents every setting of every config section, with the defaults the code has: docs and code cannot drift."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from ebbflow.runtime.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = {f.name: f.default_factory for f in fields(Config) if f.name != "models"}  # type: ignore[misc]


def _paragraph(section: str) -> str:
    """The README's text from "settings (`section:`" to the next blank line after it (a table included)."""
    text = README.read_text()
    found = re.search(rf"settings \(`{section}:`[^\n]*\n", text, re.IGNORECASE)
    assert found, f"README has no 'settings (`{section}:` ...' paragraph"
    rest = text[found.start():]
    if "\n\n|" in rest[: len(found.group(0)) + 2]:  # a table follows the heading line
        table = rest[len(found.group(0)) + 1 :]
        return found.group(0) + table.split("\n\n", 1)[0]
    return rest.split("\n\n", 1)[0]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if not value else value
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return repr(value)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_setting_is_documented_and_nothing_else(section: str) -> None:
    paragraph = _paragraph(section)
    assert f"EBBFLOW_{section.upper()}__" in paragraph, "the environment spelling is named"
    config = SECTIONS[section]()
    names = {f.name for f in fields(config)}
    rows = [line for line in paragraph.splitlines() if line.startswith("| `")]
    if rows:
        documented = {re.match(r"\| `(\w+)`", row).group(1) for row in rows}  # type: ignore[union-attr]
    else:  # an inline list: the names after the heading, leaving out what parentheses say about them
        listed = re.sub(r"\([^)]*\)", "", paragraph.split("):", 1)[1])
        documented = set(re.findall(r"`(\w+)`", listed))
    assert documented == names, f"undocumented: {sorted(names - documented)}; documented but unknown: {sorted(documented - names)}"
    for row in rows:  # tables also show defaults, which must be the code's
        name, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        name = name.strip("`")
        assert default == _shown(getattr(config, name)), f"{section}.{name}: README says {default}, the code {_shown(getattr(config, name))}"

