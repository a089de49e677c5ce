"""Every file the README and docs/*.md link to is in the repository (issue 13: docs/results.md
cited eight figures that had never been committed)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_linked_file_exists() -> None:
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not missing, "\n".join(missing)


def test_every_run_config_key_has_a_row_in_the_readme_table() -> None:
    """A key (an estimator's knob included) is documented where users look for it."""
    from rabo_protocol import RunConfig

    section = (ROOT / "README.md").read_text().split("## Configuration keys", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {key for row in rows for key in re.findall(r"`([a-z0-9-]+)`", row.split(" | ")[0])}
    assert {f.alias for f in RunConfig.model_fields.values()} - documented == set()
