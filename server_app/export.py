"""Export the submodel a device at ratio r deploys, from a finished run's directory.

    python -m server_app.export results/<run> --ratio 0.25     # -> results/<run>/deploy-r0.25.*

writes, for the leading units of every group at ratio r (the network ``test-accuracy@<r>`` scores):

- ``deploy-r<r>.pt2``: a ``torch.export`` program, loadable with torch alone
  (``torch.export.load(path).module()``): standardised images (N, *in_shape), any N -> logits;
  BatchNorm uses the statistics of the run's held-out inputs (the network's own running
  statistics, whatever ``norm-stats`` trained with);
- ``deploy-r<r>.pt``: the state dict, the widths and the run config, to rebuild the network with
  this project (:func:`load_submodel`);
- ``deploy-r<r>.json``: ratio, widths, parameters, bytes, the input standardisation
  (``(raw - input-mean) / input-std``) and the test accuracy of the exported file itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rabo_protocol import RunConfig, parse_run_config
from rabo_pruning import submodel_spec
from tasks import BilevelTask, holdout_set, image_data, make_task
from tasks.network import running_statistics, with_statistics

from .results import atomic_write, write_json

__all__ = ["export", "load_submodel"]


def _load(path: Path) -> tuple[dict[str, Any], RunConfig, BilevelTask]:
    """A saved file (model.pt, deploy-r<r>.pt), the run config it holds and the run's task."""
    saved = torch.load(path, weights_only=True)
    cfg = parse_run_config({k: v for k, v in saved["config"].items() if k != "estimator"})
    return saved, cfg, make_task(cfg.task, cfg.data_spec(num_partitions=1), cfg.mu, **cfg.task_options())


def _network(task: BilevelTask, widths: dict[str, int], params: dict[str, torch.Tensor],
             calibration: torch.Tensor) -> nn.Module:
    """The network at ``widths`` holding ``params`` as its own tensors, BatchNorm statistics from
    ``calibration``, in eval mode."""
    model = task.build_model(widths)
    own = {k: v for k, v in params.items() if k in dict(model.named_parameters())}
    model = with_statistics(model, running_statistics(model, own, calibration))
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            tensor.copy_(own[name])
    return model.eval()


def export(run_dir: Path, ratio: float) -> dict[str, Any]:
    """Write ``deploy-r<ratio>.{ts,pt,json}`` into ``run_dir`` (see the module); returns the JSON."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio={ratio} is not in (0, 1]")
    saved, cfg, task = _load(run_dir / "model.pt")
    spec = submodel_spec(task.structure, ratio)
    widths = spec.widths(task.structure)
    parts = spec.take(task.structure, {p: {k: t.numpy() for k, t in saved["parts"][p].items()}
                                        for p in ("x", "y")})
    params = {k: torch.as_tensor(a) for part in parts.values() for k, a in part.items()}
    test = holdout_set(cfg.data_spec(num_partitions=1))
    model = _network(task, widths, params, test.inputs)
    # a copy: the program saves its example inputs, and a view would save the whole test set with them
    program = torch.export.export(model, (test.inputs[:2].clone(),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    stem = f"deploy-r{ratio:g}"
    atomic_write(run_dir / f"{stem}.pt2", lambda handle: torch.export.save(program, handle))
    state = {k: t.detach().clone() for k, t in model.state_dict().items()}
    atomic_write(run_dir / f"{stem}.pt", lambda handle: torch.save(
        {"state": state, "widths": widths, "ratio": ratio, "config": saved["config"]}, handle))
    with torch.no_grad():
        exported = torch.export.load(run_dir / f"{stem}.pt2").module()
        correct = (exported(test.inputs).argmax(dim=1) == test.labels).float().mean()
    norm = image_data(cfg.data_spec(num_partitions=1)).normalization
    info = {"ratio": ratio, "widths": widths, "parameters": sum(t.numel() for t in model.parameters()),
            "bytes": (run_dir / f"{stem}.pt2").stat().st_size, "in-shape": list(task.in_shape),
            "input-mean": norm.mean, "input-std": norm.std, "test-accuracy": float(correct),
            "test-examples": len(test.labels), "files": [f"{stem}.pt2", f"{stem}.pt"]}
    write_json(run_dir / f"{stem}.json", info)
    return info


def load_submodel(path: Path) -> nn.Module:
    """The network of a ``deploy-r<r>.pt`` file, rebuilt with this project (eval mode)."""
    saved, _, task = _load(path)
    model = task.build_model(saved["widths"])
    stats = {k: t for k, t in saved["state"].items() if k.endswith(("running_mean", "running_var"))}
    model = with_statistics(model, stats) if stats else model
    model.load_state_dict(saved["state"])
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's directory (holds model.pt)")
    parser.add_argument("--ratio", type=float, action="append", required=True,
                        help="the ratio to export (repeat for several)")
    args = parser.parse_args(argv)
    if not (args.run_dir / "model.pt").is_file():
        parser.error(f"{args.run_dir} holds no model.pt (a finished run's directory does)")
    for ratio in args.ratio:
        try:
            info = export(args.run_dir, ratio)
        except ValueError as err:
            parser.error(str(err))
        print(json.dumps(info))


if __name__ == "__main__":
    main()
