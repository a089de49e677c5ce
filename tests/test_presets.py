"""The experiment presets in conf/: each is what `flwr run . --run-config conf/<name>.toml` sends, a
valid run config once fused with pyproject.toml, documented, and runnable (3 rounds here)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from rabo_protocol.flwr_compat import get_fused_config_from_dir, parse_config_args
from server_app.app import run
from server_app.inprocess import InProcessGrid
from tests.fakes import FAST_CONFIG

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "conf").glob("*.toml"))
DOCS = {"README": ROOT / "README.md",
        **{f"docs/{page.name}": page for page in sorted((ROOT / "docs").glob("*.md"))}}
"""What a preset's comment may cite: the README or a docs page, by the name it is cited with."""
CITED = re.compile(r'(README|docs/[a-z0-9_-]+\.md) "([^"]+)"')
REFERENCE = re.compile(r"conf/([A-Za-z0-9_.-]+\.toml)")


def _overrides(path: Path) -> dict[str, object]:
    """What `flwr run` sends for ``--run-config <path>`` (Flower's own parser)."""
    return parse_config_args([str(path)])


def _fused(path: Path) -> dict[str, object]:
    """The run config the apps receive: pyproject's [tool.flwr.app.config] with the preset over it,
    fused as the SuperLink does (a key pyproject does not declare is refused there)."""
    return get_fused_config_from_dir(ROOT, _overrides(path))  # type: ignore[arg-type]


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")]


def test_the_presets_exist() -> None:
    assert {p.stem for p in PRESETS} >= {"default", "hyper-cleaning", "separated", "resnet20"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_a_preset_is_a_valid_run_config_that_keeps_its_keys(path: Path) -> None:
    overrides = _overrides(path)
    assert overrides, "a preset sets at least the keys that name its experiment"
    assert all("." not in key for key in overrides), "flat `key = value` lines, no tables"
    cfg = parse_run_config(_fused(path))
    flat = cfg.to_flat()
    assert {k: flat[k] for k in overrides} == overrides


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_a_preset_says_what_it_reproduces_and_where(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# "), "the file opens with a comment saying what it reproduces"
    comment = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    cited = CITED.findall(comment)
    assert cited, 'the comment names a section: README "<heading>" or docs/<page>.md "<heading>"'
    for doc, title in cited:
        assert doc in DOCS, f"{doc} does not exist"
        assert any(h.startswith(title) for h in _headings(DOCS[doc])), f'{doc} has no section "{title}"'


def test_every_preset_the_docs_name_exists_and_the_configuration_page_lists_every_preset() -> None:
    named = {doc: set(REFERENCE.findall(path.read_text())) for doc, path in DOCS.items()}
    files = {p.name for p in PRESETS}
    assert set().union(*named.values()) - files == set()
    assert files - named["docs/configuration.md"] == set()


def test_flower_refuses_a_preset_beside_inline_keys() -> None:
    """What the docs say about changing one key of a preset: Flower reads one `--run-config`
    value ending in .toml as a file and refuses a file beside `key=value` strings."""
    with pytest.raises(ValueError, match="TOML files cannot be passed alongside"):
        parse_config_args([str(ROOT / "conf" / "default.toml"), "seed=1"])


SPEED = {**FAST_CONFIG, "inner-steps": 1, "v-steps": 1, "outer-steps": 1, "profile-memory": False,
         "resnet-width": 4}
"""What a test run changes where the preset does not set it: data, local work, the ResNet's width."""


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small tensors: a second torch thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
@pytest.mark.usefixtures("one_thread")
def test_a_preset_runs(tmp_path: Path, path: Path) -> None:
    preset = _overrides(path)
    config = {**_fused(path), **SPEED, **preset, "num-server-rounds": 3, "results-dir": str(tmp_path)}
    nodes = max(4, int(config["min-train-nodes"]))  # type: ignore[call-overload]
    run_dir = run(InProcessGrid(client_app, nodes, config), parse_run_config(config))
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert all(r["replies"] > 0 and r["failed-replies"] == 0 for r in rows[1:])
    resolved = json.loads((run_dir / "config.json").read_text())
    assert {k: resolved[k] for k in preset if k != "num-server-rounds"} == {
        k: v for k, v in preset.items() if k != "num-server-rounds"}
