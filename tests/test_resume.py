"""Checkpoints: a run that crashed after round k and was resumed ends exactly where an
uninterrupted run ends."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message, RecordDict

from client_app.app import app as client_app
from rabo_protocol import parse_run_config
from server_app.app import RunStopped, main, run
from server_app.inprocess import InProcessGrid
from tests.fakes import FAST_CONFIG


class CrashingGrid(InProcessGrid):
    """Raises (like a killed server) when round ``crash_round`` starts training."""

    def __init__(self, crash_round: int, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crash_round = crash_round

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if any(m.metadata.message_type == "train" and m.metadata.group_id == str(self.crash_round)
               for m in messages):
            raise RuntimeError("server killed")
        return super().send_and_receive(messages, timeout=timeout)


def _config(tmp_path: Path, **overrides: object) -> dict[str, object]:
    return {**FAST_CONFIG, "results-dir": str(tmp_path), "num-server-rounds": 5,
            "mask-policy": "random", **overrides}


@pytest.mark.parametrize("algorithm", ["rabo", "rafbo"])
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, algorithm: str) -> None:
    full = _config(tmp_path / "full", algorithm=algorithm)
    reference = run(InProcessGrid(client_app, 6, full), parse_run_config(full))

    crashing = _config(tmp_path / "crash", algorithm=algorithm)
    with pytest.raises(RuntimeError, match="server killed"):
        run(CrashingGrid(4, client_app, 6, crashing), parse_run_config(crashing))
    (crashed_dir,) = (tmp_path / "crash").iterdir()
    assert torch.load(crashed_dir / "checkpoint.pt", weights_only=True)["round"] == 3

    resumed_config = {**crashing, "resume-from": str(crashed_dir)}
    resumed = run(InProcessGrid(client_app, 6, resumed_config), parse_run_config(resumed_config))
    assert resumed == crashed_dir

    expected = torch.load(reference / "model.pt", weights_only=True)["parts"]
    got = torch.load(resumed / "model.pt", weights_only=True)["parts"]
    for part, tensors in expected.items():
        for name, tensor in tensors.items():
            torch.testing.assert_close(got[part][name], tensor, rtol=0, atol=1e-6)
    rows_ref = json.loads((reference / "metrics.json").read_text())
    rows_got = json.loads((resumed / "metrics.json").read_text())
    assert [r["round"] for r in rows_got] == [0, 1, 2, 3, 4, 5]
    assert [r["test-accuracy"] for r in rows_got] == [r["test-accuracy"] for r in rows_ref]
    clients_ref = (reference / "clients.csv").read_text().splitlines()
    assert len((resumed / "clients.csv").read_text().splitlines()) == len(clients_ref)


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    first = _config(tmp_path, **{"num-server-rounds": 1})
    run_dir = run(InProcessGrid(client_app, 4, first), parse_run_config(first))
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={**first, "resume-from": str(run_dir), "inner-lr": 0.05})
    with pytest.raises(RunStopped, match=r"'inner-lr' = 0.05 \(checkpoint: 0.3\)"):
        main(InProcessGrid(client_app, 4, {}), context)
    context.run_config["resume-from"] = str(tmp_path / "nowhere")
    with pytest.raises(RunStopped, match="no checkpoint.pt there"):
        main(InProcessGrid(client_app, 4, {}), context)


def test_damaged_checkpoints_and_unusable_paths_stop_with_one_message(tmp_path: Path) -> None:
    """Each stops the run with one message naming the file or key, never a traceback or a resumed
    run in which every reply fails."""
    first = _config(tmp_path, **{"num-server-rounds": 1})
    run_dir = run(InProcessGrid(client_app, 4, first), parse_run_config(first))
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={**first, "resume-from": str(run_dir)})
    checkpoint = run_dir / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=True)
    # a NaN model: resuming would only fail every round
    name = next(iter(saved["parts"]["y"]))
    saved["parts"]["y"][name] = torch.full_like(saved["parts"]["y"][name], float("nan"))
    torch.save(saved, checkpoint)
    with pytest.raises(RunStopped, match=f"y:{name} contains NaN or Inf in the checkpoint"):
        main(InProcessGrid(client_app, 4, {}), context)
    # a model of another shape
    saved["parts"]["y"][name] = torch.zeros(3)
    torch.save(saved, checkpoint)
    with pytest.raises(RunStopped, match=f"y:{name} has shape"):
        main(InProcessGrid(client_app, 4, {}), context)
    # bytes that are no checkpoint at all, and a truncated one
    for damage in (b"not a checkpoint", checkpoint.read_bytes()[:100]):
        checkpoint.write_bytes(damage)
        with pytest.raises(RunStopped, match="checkpoint.pt cannot be read .* damaged or not a checkpoint"):
            main(InProcessGrid(client_app, 4, {}), context)
    # results-dir that is a file
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={**first, "results-dir": str(blocker)})
    with pytest.raises(RunStopped, match="'results-dir' = .*a-file.*cannot create the run directory"):
        main(InProcessGrid(client_app, 4, {}), context)
    if not torch.cuda.is_available():
        context.run_config.update({"results-dir": str(tmp_path), "device": "cuda"})
        with pytest.raises(RunStopped, match="'device' = 'cuda': .*CUDA is not available"):
            main(InProcessGrid(client_app, 4, {}), context)
