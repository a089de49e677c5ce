"""The run figure: test accuracy (full width and each deployed width) and coverage per round, and
test accuracy against time (the virtual clock's seconds when the run has one, else wall-clock)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

ACCURACY_TARGET = 0.9


def short_title(title: str, width: int = 48) -> str:
    """``title`` wrapped at its hyphens onto lines of at most ``width`` characters (a run name is
    long: it would be cut off on the left of the figure)."""
    lines: list[str] = []
    for word in title.split("-"):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += "-" + word
        else:
            lines.append(word if not lines else "-" + word)
    return "\n".join(lines)


def seconds_axis(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], str]:
    """Each row's time and its label: the cumulative ``simulated-seconds`` of the virtual clock,
    else the run's ``elapsed-seconds`` (wall-clock, the server's evaluation included)."""
    if any("simulated-seconds" in r for r in rows):
        total, times = 0.0, []
        for row in rows:
            total += float(row.get("simulated-seconds", 0.0))
            times.append(total)
        return times, "simulated seconds (virtual clock)"
    return [float(r.get("elapsed-seconds", float("nan"))) for r in rows], "wall-clock seconds"


def figure(rows: Sequence[Mapping[str, Any]], title: str) -> plt.Figure:
    """Test accuracy (with the 90 % line labelled) and the coverage C_x*, C_y* per round, at
    integer rounds, and test accuracy against :func:`seconds_axis`, under the run name wrapped
    onto short lines."""
    rounds = [r["round"] for r in rows]
    fig, (ax_acc, ax_cov, ax_time) = plt.subplots(1, 3, figsize=(14, 4.2))
    ax_acc.plot(rounds, [r.get("test-accuracy", float("nan")) for r in rows], marker=".",
                label="test accuracy")
    for key in (k for k in rows[-1] if k.startswith("test-accuracy@")):  # the deployed widths
        ax_acc.plot(rounds, [r.get(key, float("nan")) for r in rows], linewidth=1,
                    label=f"at r = {key.split('@')[1]}")
    ax_acc.axhline(ACCURACY_TARGET, color="grey", linestyle=":", linewidth=1,
                   label=f"{ACCURACY_TARGET:.0%} target")
    ax_acc.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    train_rows = [r for r in rows if "coverage-x-min" in r]
    # C_y* drawn under C_x* with a wider line and hollow markers: equal values stay visible
    for key, label, style in (("coverage-y-min", "C_y*", {"linestyle": "--", "marker": "o",
                                                          "markerfacecolor": "none", "linewidth": 3}),
                              ("coverage-x-min", "C_x*", {"linestyle": "-", "marker": "."})):
        ax_cov.plot([r["round"] for r in train_rows], [r[key] for r in train_rows], label=label,
                    **style)
    top = max((r.get("replies", 0) + r.get("failed-replies", 0) for r in train_rows), default=1)
    ax_cov.set_ylim(0, top + 0.5)
    ax_cov.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_cov.set(xlabel="round", ylabel="fewest clients covering a coordinate", title="coverage")
    ax_cov.legend()
    for axis in (ax_acc, ax_cov):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    times, label = seconds_axis(rows)
    ax_time.plot(times, [r.get("test-accuracy", float("nan")) for r in rows], marker=".")
    ax_time.axhline(ACCURACY_TARGET, color="grey", linestyle=":", linewidth=1)
    ax_time.set(xlabel=label, ylabel="test accuracy", ylim=(0, 1), title="accuracy vs time")
    fig.suptitle(short_title(title), fontsize=10)
    fig.tight_layout()
    return fig
