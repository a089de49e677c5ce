"""The round's metrics: coverage of the new global model, reply counts, the screen's figures and
the clients' own figures averaged."""

from __future__ import annotations

import math
from collections.abc import Sequence

from flwr.app import MetricRecord

from rabo_pruning.aggregation import CoverageAverage

from .screen import MIN_PEERS

__all__ = ["round_metrics"]


def round_metrics(acc: CoverageAverage, x_keys: Sequence[str], y_keys: Sequence[str],
                  accepted: Sequence[MetricRecord], failed: int, unscreened: int = 0,
                  untrained: int = 0) -> MetricRecord:
    """Coverage of x and y (min, mean, fraction covered; ``x_keys`` are the reply part that updates
    x; ``-trained-min`` counts only the clients that changed a coordinate), reply counts, the
    screen's figures (``unscreened`` replies, ``untrained`` rows, and the fraction of the covered
    coordinates fewer than ``MIN_PEERS`` + 1 replies trained), and the
    clients' own numeric metrics averaged by their num-examples."""
    total = sum(float(m["num-examples"]) for m in accepted)  # type: ignore[arg-type]
    out: dict[str, float | int] = {
        "coverage-x-min": acc.min_coverage(x_keys),
        "coverage-y-min": acc.min_coverage(y_keys),
        "coverage-x-mean": acc.mean_coverage(x_keys),
        "coverage-y-mean": acc.mean_coverage(y_keys),
        "coverage-x-fraction": acc.covered_fraction(x_keys),
        "coverage-y-fraction": acc.covered_fraction(y_keys),
        "coverage-x-trained-min": acc.min_trained(x_keys),
        "coverage-y-trained-min": acc.min_trained(y_keys),
        "replies": len(accepted),
        "failed-replies": failed,
        "tolerated-byzantine-min": acc.tolerated([*x_keys, *y_keys]),
        "unscreened-replies": unscreened,
        "untrained-rows": untrained,
        "unprotected-fraction": acc.covered_fraction_below(MIN_PEERS + 1),
        "num-examples": int(total),
    }
    server_keys = set(out)
    for metrics in accepted:
        weight = float(metrics["num-examples"]) / total  # type: ignore[arg-type]
        for key, value in metrics.items():
            if (key in server_keys or key in ("partition-id",) or isinstance(value, bool)
                    or not isinstance(value, (int, float)) or not math.isfinite(value)):
                continue  # the server's own figures and identity keys are never a client's to set
            out[key] = out.get(key, 0.0) + weight * float(value)
    return MetricRecord(out)
