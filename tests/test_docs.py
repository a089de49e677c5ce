"""The README is a front door and docs/*.md the reference: every file and heading they link to
exists, every run-config key has a row in docs/configuration.md, and the documented defaults are
the validated ones."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
README_MAX_LINES = 220


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped but hyphens and underscores,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # a "# comment" in code is no heading
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_every_linked_file_and_heading_exists() -> None:
    missing = []
    for doc in [README, *DOCS]:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            name, _, anchor = target.partition("#")
            path = (doc.parent / name).resolve() if name else doc
            if not path.exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                missing.append(f"{doc.relative_to(ROOT)} -> {target} (no such heading)")
    assert not missing, "\n".join(missing)


def test_the_readme_is_short_and_links_every_docs_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "reference material belongs in docs/"
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(text)}
    assert {page.resolve() for page in DOCS} - linked == set()


def _key_rows() -> dict[str, list[str]]:
    """The key table of docs/configuration.md: each key of a row's first cell -> the row's cells."""
    section = (ROOT / "docs" / "configuration.md").read_text().split("## Configuration keys", 1)[1]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return {key: cells for cells in rows for key in re.findall(r"`([a-z0-9-]+)`", cells[0])}


def test_every_run_config_key_has_a_row_in_the_configuration_table() -> None:
    """A key (an estimator's knob included) is documented where users look for it."""
    from rabo_protocol import RunConfig

    assert {f.alias for f in RunConfig.model_fields.values()} - set(_key_rows()) == set()


def test_the_docs_state_the_validated_outer_momentum_default() -> None:
    """RABO's server momentum is ours, not the paper's, and sets RABO's step apart from RAFBO's at one
    outer-lr: the key table and the methods page state its default, which is the validated one."""
    from rabo_protocol import RunConfig

    default = RunConfig.model_fields["outer_momentum"].default
    assert _key_rows()["outer-momentum"][1].strip() == f"`{default}`"
    methods = (ROOT / "docs" / "methods.md").read_text()
    assert re.search(rf"`outer-momentum` =\s+{re.escape(str(default))} by default", methods)
    assert "outer-momentum=0" in methods and "not part of the paper" in methods
