"""What the server keeps of a client's strings and figures: bounded, escaped, never its own keys.

Every entry point where a client's text or metrics reach the server's log or results calls this
module: train replies (:func:`accept_metrics`, the built-in strategy and wrapped plug-ins alike),
profile and evaluate errors (:func:`client_text`). A client's text is cut to ``TEXT_LIMIT``
characters and escaped (newlines and non-printable characters as ``\\n``, ``\\x..``), so it can
neither flood the log nor forge a log line. A reply keeps at most ``MAX_METRICS`` metrics, each
named by at most ``MAX_KEY_LENGTH`` characters of ``[A-Za-z0-9_.@-]``; a metric named like one of
the server's own figures (:func:`server_key`) is dropped, so a client can neither set nor shift
the round's counts, costs, evaluation or detection figures. Its ``num-examples`` is checked
against what the node declared and capped at the size the server allows it
(:attr:`rabo_strategy.profiles.NodeProfile.examples_cap`); its ``partition-id`` is the server's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from logging import WARNING
from typing import Protocol

from flwr.app import MetricRecord
from flwr.common import log

TEXT_LIMIT = 200
"""Characters of a client's text (an error reason, a key) the server logs or stores."""
MAX_METRICS = 64
"""Metrics the server keeps of one reply (the first ones, in the reply's order)."""
MAX_KEY_LENGTH = 64
_KEY = re.compile(rf"[A-Za-z0-9_.@-]{{1,{MAX_KEY_LENGTH}}}")
SERVER_KEYS = frozenset({
    "round", "replies", "failed-replies", "skipped", "late-replies", "elapsed-seconds",
    "train-round-seconds", "client-flops", "tolerated-byzantine-min", "simulated-seconds",
    "node-id", "partition-id", "resource-ratio", "eval-nodes", "unscreened-replies", "untrained-rows",
    "unprotected-fraction", "reference-seconds", "reference-wait-seconds",
})
"""The round's and clients.csv's columns that the server computes."""
IDENTITY_KEYS = frozenset({"node-id", "partition-id", "resource-ratio"})
"""Server keys dropped without a warning: the server writes its own, and the ClientApp reports
its partition id and ratio for runs without a strategy that knows them."""
SERVER_PREFIXES = ("test-", "detection-", "federated-", "coverage-", "bytes-")
"""The server's evaluation, detection, federated evaluation, coverage and traffic figures."""


class Claimed(Protocol):
    """What the server knows of the node behind a reply (a profile, or what it was sent)."""

    @property
    def partition_id(self) -> int | None: ...

    @property
    def num_examples(self) -> int | None: ...

    @property
    def examples_cap(self) -> int | None: ...


def client_text(text: object, limit: int = TEXT_LIMIT) -> str:
    """``text`` as one printable line: backslash escapes for newlines, control and non-ASCII
    characters; a text longer than ``limit`` keeps its first and last ``limit // 2`` characters
    (a traceback's last line names the error) around its length."""
    def escaped(part: str) -> str:
        return part.encode("unicode_escape").decode("ascii")

    raw = str(text)
    if len(raw) <= limit and len(shown := escaped(raw)) <= limit:
        return shown
    half = max(limit // 2, 1)
    return f"{escaped(raw[:half])[:half]} ...[{len(raw)} characters]... {escaped(raw[-half:])[-half:]}"


def server_key(key: str) -> bool:
    """Whether ``key`` names one of the server's own figures (never a client's to report)."""
    return key in SERVER_KEYS or key.startswith(SERVER_PREFIXES)


def clean_metrics(record: MetricRecord, node: int) -> None:
    """Drop, in place, the metrics of ``record`` the server does not keep: names outside the safe
    charset or longer than ``MAX_KEY_LENGTH``, the server's keys, and those past the first
    ``MAX_METRICS``; one warning for the reply of ``node`` when any is dropped."""
    kept = [k for k in record if _KEY.fullmatch(k) and not server_key(k)][:MAX_METRICS]
    dropped = [k for k in record if k not in set(kept)]
    for key in dropped:
        del record[key]
    dropped = [k for k in dropped if k not in IDENTITY_KEYS]
    if dropped:
        log(WARNING, "node %d: %d reply metrics dropped (server keys, names over %d characters or "
            "outside [A-Za-z0-9_.@-], or past the first %d), e.g. %s", node, len(dropped),
            MAX_KEY_LENGTH, MAX_METRICS, client_text(", ".join(k[:MAX_KEY_LENGTH] for k in dropped[:3])))


def check_examples(metrics: Mapping[str, object], declared: int | None = None) -> float:
    """A reply's ``num-examples``: a finite positive number, at most the ``declared`` train size
    of the node (what its profile reported at query time; None: not declared, not bounded)."""
    examples = metrics.get("num-examples")
    if (isinstance(examples, bool) or not isinstance(examples, (int, float))
            or not math.isfinite(examples) or examples <= 0):
        raise ValueError(f"num-examples={client_text(repr(examples), 40)} is not a positive finite number")
    if declared is not None and examples > declared:
        raise ValueError(f"num-examples={examples:g} is above the {declared} train examples the node "
                         "declared at query time")
    return float(examples)


def _scaled_counts(counts: object, claimed: float, total: int) -> object:
    """``class-counts`` summing to ``claimed``, rescaled to integers summing to ``total`` (largest
    remainders first); anything else unchanged (the head-row check refuses it)."""
    if (not isinstance(counts, list) or any(isinstance(c, bool) or not isinstance(c, int) or c < 0
                                            for c in counts) or sum(counts) != claimed):
        return counts
    exact = [c * total / claimed for c in counts]
    scaled = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: scaled[i] - exact[i])
    for i in by_remainder[:total - sum(scaled)]:
        scaled[i] += 1
    return scaled


def accept_metrics(metrics: MetricRecord, node: int, claimed: Claimed) -> float:
    """The train reply metrics of ``node`` as the server keeps them, in place: cleaned
    (:func:`clean_metrics`), ``num-examples`` checked against the node's declaration (ValueError)
    and capped at its ``examples_cap`` (its ``class-counts`` rescaled to match), ``partition-id``
    set to the server's (-1: none). Returns the num-examples the reply weighs."""
    clean_metrics(metrics, node)
    examples = check_examples(metrics, claimed.num_examples)
    cap = claimed.examples_cap
    if cap is not None and examples > cap:
        if "class-counts" in metrics:
            metrics["class-counts"] = _scaled_counts(metrics["class-counts"], examples, cap)  # type: ignore[assignment]
        metrics["num-examples"], examples = cap, float(cap)
    metrics["partition-id"] = -1 if claimed.partition_id is None else claimed.partition_id
    return examples
