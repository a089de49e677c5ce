"""The resource-adaptive bilevel Strategy (RABO / RAFBO) for Flower's Message API."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from logging import INFO, WARNING

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    ConfigRecordValues,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from rabo_protocol.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    PROFILE,
    REPLY_PARTS,
    pack,
    unpack,
    widths_config,
)
from rabo_pruning.aggregation import CoverageAverage
from rabo_pruning.masks import MaskPolicy, RoundClient
from rabo_pruning.submodel import SliceIndex
from tasks import LayerSpec

from .replies import check_examples, decode

ALGORITHMS = ("rabo", "rafbo")
CAPACITIES = ("fixed", "dynamic")
MOMENTUM_SCOPES = ("covered", "all")
"""Which x coordinates RABO's heavy-ball step moves: those some client covered this round (their
velocity is updated, the others' velocity is kept for later), or all (uncovered ones keep moving
with their old velocity)."""
RMS_HISTORY = 8
"""How many accepted update RMS values per ratio the relative bound remembers."""
SIZINGS = ("resource-adaptive", "full-model", "drop-weak")
"""How a node's budget becomes the size it trains: its own ratio, always the full model, or the
full model for the nodes whose budget admits it and nothing for the others."""


@dataclass(frozen=True)
class NodeProfile:
    """What the server knows about a node: where its ratio came from, and its mask key."""

    node_id: int
    partition_id: int
    ratio: float
    source: str
    num_partitions: int = -1
    num_examples: int = -1
    """The train examples the node declared at query time: a reply's num-examples is bounded by it
    (-1: not declared, not bounded)."""

    @property
    def client_key(self) -> int:
        """Seeds per-client mask choices: the partition id, else the node id."""
        return self.partition_id if self.partition_id >= 0 else self.node_id


_TOKEN = re.compile(r"[A-Za-z0-9_.:=/ -]{1,64}")


def resolve_profile(node_id: int, profile: ConfigRecord, levels: Sequence[float]) -> NodeProfile:
    """A node's ratio: its node-config ``resource-ratio`` if set, else ``levels[key % len]``.

    ``key`` is the node's ``partition-id`` (simulation) or, without one, its node id.
    """
    if "error" in profile:  # the node reported an invalid node config
        raise ValueError(str(profile["error"]))
    partition_id = int(profile.get("partition-id", -1))  # type: ignore[arg-type]
    num_partitions = int(profile.get("num-partitions", -1))  # type: ignore[arg-type]
    num_examples = profile.get("num-examples", -1)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or not (
            num_examples == -1 or num_examples >= 1):
        raise ValueError(f"num-examples={num_examples!r} is not a positive integer")
    declared = float(profile.get("resource-ratio", -1.0))  # type: ignore[arg-type]
    if declared != -1.0:
        if not 0.0 < declared <= 1.0:
            raise ValueError(f"node-config resource-ratio={declared} is outside (0, 1]")
        source = profile.get("ratio-source", "node-config")
        # it reaches the server's log and summary.json: a short printable token, nothing else
        if not isinstance(source, str) or not _TOKEN.fullmatch(source):
            raise ValueError(f"ratio-source={str(source)[:40]!r} is not a short printable token")
        return NodeProfile(node_id, partition_id, declared, source, num_partitions, num_examples)
    key = partition_id if partition_id >= 0 else node_id
    return NodeProfile(node_id, partition_id, float(levels[key % len(levels)]), "ratio-levels",
                       num_partitions, num_examples)


def query_profiles(grid: Grid, nodes: Iterable[int], config: Mapping[str, ConfigRecordValues],
                   levels: Sequence[float], server_round: int, timeout: float) -> dict[int, NodeProfile]:
    """Ask ``nodes`` for their profile (the ClientApp also checks its data then); a node that does
    not answer, reports an error or sends an invalid profile is logged and left out of the result."""
    queries = [
        Message(content=RecordDict({CONFIG: ConfigRecord({**config, "server-round": server_round})}),
                dst_node_id=n, message_type=MessageType.QUERY, group_id=f"profile-{server_round}")
        for n in nodes
    ]
    profiles: dict[int, NodeProfile] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout) if queries else ():
        node = reply.metadata.src_node_id
        try:
            if reply.has_error():
                raise ValueError(reply.error.reason)
            profiles[node] = resolve_profile(node, reply.content[PROFILE], levels)
        except (KeyError, ValueError, TypeError) as err:
            log(WARNING, "node %d left out: its profile is invalid: %s", node, err)
    return profiles


Owned = Callable[[NodeProfile], Mapping[str, np.ndarray]]
"""Per-sample parameters: the global coordinates a node's samples own (empty for most tasks)."""


def _no_owned(profile: NodeProfile) -> Mapping[str, np.ndarray]:
    return {}


@dataclass(frozen=True)
class _Sent:
    """What a node was sent this round (needed to scatter its reply back)."""

    profile: NodeProfile
    index: dict[str, SliceIndex]
    ratio: float


class ResourceAdaptiveBilevel(Strategy):
    """Sends each sampled node the slices of x, y, v for its ratio; averages per coordinate.

    Args:
        layers: the task's layer list (defines every slice).
        algorithm: ``"rabo"`` (replies carry hypergradients; the server steps x with
            ``outer_lr`` and heavy-ball ``outer_momentum``) or ``"rafbo"`` (replies carry
            models; the server averages them).
        ratio_levels: ratios assigned by partition id when a node declares none.
        mask_policy: chooses the kept units of each prunable layer for the round's clients.
        sizing: ``"resource-adaptive"`` (each node trains the submodel of its ratio),
            ``"full-model"`` (every node trains the full model) or ``"drop-weak"`` (only nodes of
            ratio 1 train; the others sit the round out).
        capacity: ``"fixed"`` (a node's ratio never changes) or ``"dynamic"`` (nodes whose ratio
            comes from ``ratio_levels`` draw a level each round, seeded by (seed, round, node);
            a ratio a node declares itself is a hardware limit and stays fixed).
        owned: the per-sample coordinates of a node (for tasks with per-sample x).
        fraction_train / min_train_nodes / min_available_nodes: sampling, as in FedAvg.
        seed: seeds node sampling (masks are seeded by their policy).
        min_successful_replies: a round with fewer valid replies is skipped (model unchanged).
        client_config: sent to every node with each query and train message.
        max_update_norm: a reply whose update (returned tensors minus those sent; h itself for
            RABO) has a larger L2 norm in any part is rejected.
        momentum_scope: ``"covered"`` or ``"all"`` (see ``MOMENTUM_SCOPES``; RABO only).
        query_timeout: seconds to wait for node profiles.
        node_wait_timeout: seconds to wait for ``min_available_nodes`` to connect before the run stops.
        aggregation / trim_fraction: the per-coordinate rule (``mean``, ``median``,
            ``trimmed-mean``; see ``rabo_pruning.aggregation``).
        max_update_norm_ratio: when > 0, a reply whose update RMS (per coordinate) exceeds this
            multiple of the median RMS of the replies at its ratio (this round's and the last
            accepted ones, see ``_rms_reference``) is rejected.
    """

    def __init__(
        self, layers: tuple[LayerSpec, ...], algorithm: str, ratio_levels: Sequence[float],
        mask_policy: MaskPolicy, *, outer_lr: float, outer_momentum: float = 0.0,
        momentum_scope: str = "all", sizing: str = "resource-adaptive", capacity: str = "fixed",
        owned: Owned = _no_owned,
        fraction_train: float = 1.0,
        min_train_nodes: int = 2, min_available_nodes: int = 2, seed: int = 0,
        min_successful_replies: int = 1, max_update_norm: float = float("inf"),
        client_config: Mapping[str, ConfigRecordValues] | None = None, query_timeout: float = 120.0,
        node_wait_timeout: float = 600.0, aggregation: str = "mean", trim_fraction: float = 0.2,
        max_update_norm_ratio: float = 0.0,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm '{algorithm}'; allowed: {', '.join(ALGORITHMS)}")
        if sizing not in SIZINGS:
            raise ValueError(f"unknown sizing '{sizing}'; allowed: {', '.join(SIZINGS)}")
        if capacity not in CAPACITIES:
            raise ValueError(f"unknown capacity '{capacity}'; allowed: {', '.join(CAPACITIES)}")
        self.sizing = sizing
        self.capacity = capacity
        self.owned = owned
        self.layers = layers
        self.algorithm = algorithm
        self.ratio_levels = tuple(ratio_levels)
        self.mask_policy = mask_policy
        self.outer_lr = outer_lr
        self.outer_momentum = outer_momentum
        if momentum_scope not in MOMENTUM_SCOPES:
            raise ValueError(f"unknown momentum-scope '{momentum_scope}'; "
                             f"allowed: {', '.join(MOMENTUM_SCOPES)}")
        self.momentum_scope = momentum_scope
        self._velocity: dict[str, np.ndarray] = {}
        self.fraction_train = fraction_train
        self.min_train_nodes = min_train_nodes
        self.min_available_nodes = min_available_nodes
        self.seed = seed
        self.min_successful_replies = min_successful_replies
        self.max_update_norm = max_update_norm
        self.client_config = dict(client_config or {})
        self.query_timeout = query_timeout
        self.node_wait_timeout = node_wait_timeout
        self.aggregation, self.trim_fraction = aggregation, trim_fraction
        self.max_update_norm_ratio = max_update_norm_ratio
        self._rms_history: dict[float, list[float]] = {}
        self.accepted_nodes: set[int] = set()
        """The nodes whose reply the last ``aggregate_train`` accepted (clients.csv keeps only these)."""
        self.profiles: dict[int, NodeProfile] = {}
        self._owned: dict[int, dict[str, np.ndarray]] = {}
        self._sent: dict[int, _Sent] = {}
        self._global: dict[str, dict[str, np.ndarray]] = {}

    # ----------------------------------------------------------------------------- Strategy API
    def summary(self) -> None:
        log(INFO, "\t├──> Algorithm: %s, outer-lr %s, sizing %s, capacity %s", self.algorithm,
            self.outer_lr, self.sizing, self.capacity)
        log(INFO, "\t├──> Ratio levels (by partition id): %s", self.ratio_levels)
        log(INFO, "\t└──> Sampling: fraction %.2f, min train nodes %d, min available %d",
            self.fraction_train, self.min_train_nodes, self.min_available_nodes)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = unpack(arrays)
        nodes = self._sample(grid, server_round)
        self._ensure_profiles(grid, nodes, server_round)
        params = {name: t for part in ("x", "y") for name, t in self._global[part].items()}
        shapes = {name: t.shape for name, t in params.items()}
        # nodes without a profile (their query failed: logged there, retried next round) sit out
        # in partition order (node ids are random in a simulation): masks, and so results, follow the seed
        training = [(p, r) for p in sorted((self.profiles[n] for n in nodes if n in self.profiles),
                                           key=lambda p: (p.client_key, p.node_id))
                    if (r := self._trained_ratio(p, server_round)) is not None]
        specs = self.mask_policy(self.layers, [RoundClient(p.client_key, r) for p, r in training],
                                 server_round, params)
        self._sent = {}
        messages = []
        for (profile, ratio), spec in zip(training, specs, strict=True):
            node = profile.node_id
            spec = replace(spec, owned=self._owned[node])
            index = spec.indices(self.layers, shapes)
            slices = {
                part: {name: index[name].take(t) for name, t in self._global[part].items()}
                for part in ("x", "y", "v")
            }
            record = pack(slices)
            node_config = ConfigRecord({
                **self.client_config, **dict(config.items()), "server-round": server_round,
                "resource-ratio": ratio, **widths_config(spec.widths(self.layers)),
            })
            content = RecordDict({ARRAYS: record, CONFIG: node_config})
            messages.append(Message(content=content, dst_node_id=node,
                                    message_type=MessageType.TRAIN, group_id=str(server_round)))
            self._sent[node] = _Sent(profile, index, ratio)
        log(INFO, "configure_train: %d of %d nodes, ratios %s", len(messages),
            len(list(grid.get_node_ids())), sorted(s.ratio for s in self._sent.values()))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        parts = REPLY_PARTS[self.algorithm]
        shapes = {f"{part}:{name}": t.shape for part in parts for name, t in self._reference(part).items()}
        acc = CoverageAverage(shapes, self.aggregation, self.trim_fraction)  # type: ignore[arg-type]
        accepted: list[tuple[_Sent, MetricRecord]] = []
        parsed: list[tuple[int, _Sent, dict[str, np.ndarray], dict[str, SliceIndex], MetricRecord,
                           float]] = []
        failures: dict[int, str] = {}
        replied: set[int] = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            if node in replied:  # count each node at most once
                log(WARNING, "round %d: second reply of node %d ignored", server_round, node)
                continue
            replied.add(node)
            sent = self._sent.get(node)
            try:
                values, metrics, rms = self._parse_reply(msg, sent, parts)
                assert sent is not None
                index = {k: sent.index[k.split(":", 1)[1]] for k in values}
                if "held-classes" in metrics:
                    values, index = self._held_rows_only(values, index, metrics["held-classes"])
            except Exception as err:  # noqa: BLE001 - whatever a malformed reply raises is its failure
                failures[node] = f"{type(err).__name__}: {err}"
                continue
            parsed.append((node, sent, values, index, metrics, rms))
        if self.max_update_norm_ratio > 0 and parsed:
            for item in list(parsed):
                reference, pool = self._rms_reference(item[1].ratio, [(p[1].ratio, p[-1]) for p in parsed])
                if not item[-1] <= self.max_update_norm_ratio * reference:
                    failures[item[0]] = (f"update RMS {item[-1]:.3g} above max-update-norm-ratio="
                                         f"{self.max_update_norm_ratio:g} x the median {reference:.3g} "
                                         f"of {pool}")
                    parsed.remove(item)
            for _, sent, *_, rms in parsed:  # accepted RMS, the next rounds' reference at that ratio
                history = self._rms_history.setdefault(sent.ratio, [])
                history[:] = [*history, rms][-RMS_HISTORY:]
        # summed in partition order, not arrival order: the same seed gives the same model
        parsed.sort(key=lambda item: (item[1].profile.client_key, item[0]))
        for _, sent, values, index, metrics, _ in parsed:
            acc.add(values, index, float(metrics["num-examples"]))  # type: ignore[arg-type]
            accepted.append((sent, metrics))
        for node in self._sent.keys() - replied:
            failures[node] = "no reply before the round timeout"
        for node, reason in sorted(failures.items()):
            log(WARNING, "round %d: reply of node %d skipped: %s", server_round, node, reason)

        self.accepted_nodes = {sent.profile.node_id for sent, _ in accepted}
        round_metrics = self._round_metrics(server_round, acc, accepted, len(failures))
        if len(accepted) < self.min_successful_replies:
            log(WARNING, "round %d skipped: %d valid replies, fewer than min-successful-replies=%d; "
                "the global model is unchanged", server_round, len(accepted),
                self.min_successful_replies)
            round_metrics["skipped"] = 1
            return None, round_metrics
        round_metrics["skipped"] = 0
        return pack(self._new_global(acc)), round_metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # evaluation is centralised on the server's held-out test set

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def state(self) -> dict[str, object]:
        """What a checkpoint needs to resume this strategy exactly (node profiles are re-queried)."""
        return {"velocity": dict(self._velocity),
                "rms-history": {str(r): list(v) for r, v in self._rms_history.items()}}

    def load_state(self, state: dict[str, object]) -> None:
        self._velocity = dict(state["velocity"])  # type: ignore[call-overload]
        history = state.get("rms-history", {})
        self._rms_history = {float(r): list(v) for r, v in history.items()}  # type: ignore[union-attr]

    # ---------------------------------------------------------------------------------- helpers
    def _trained_ratio(self, profile: NodeProfile, server_round: int) -> float | None:
        """The ratio a node trains at this round (None: it sits the round out)."""
        ratio = profile.ratio
        if self.capacity == "dynamic" and profile.source == "ratio-levels":
            draw = np.random.default_rng([self.seed, server_round, profile.client_key, 11])
            ratio = float(self.ratio_levels[int(draw.integers(len(self.ratio_levels)))])
        if self.sizing == "full-model":
            return 1.0
        if self.sizing == "drop-weak":
            return 1.0 if ratio >= 1.0 else None
        return ratio

    def _sample(self, grid: Grid, server_round: int) -> list[int]:
        deadline = time.monotonic() + self.node_wait_timeout
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"min-available-nodes={self.min_available_nodes} but only {len(nodes)} node(s) "
                    f"connected within {self.node_wait_timeout:g} s (round-timeout); lower "
                    "min-available-nodes or start more SuperNodes")
            log(INFO, "Waiting for nodes: %d connected, %d required", len(nodes),
                self.min_available_nodes)
            time.sleep(1.0)
        size = min(len(nodes), max(int(len(nodes) * self.fraction_train), self.min_train_nodes))
        rng = np.random.default_rng([self.seed, server_round])
        # Choose positions, not ids: node ids are uint64 and would lose precision in numpy.
        return sorted(nodes[i] for i in rng.choice(len(nodes), size=size, replace=False))

    def _ensure_profiles(self, grid: Grid, nodes: list[int], server_round: int) -> None:
        unknown = [n for n in nodes if n not in self.profiles]
        if not unknown:
            return
        for node, profile in query_profiles(grid, unknown, self.client_config, self.ratio_levels,
                                            server_round, self.query_timeout).items():
            try:
                self._owned[node] = dict(self.owned(profile))
            except ValueError as err:
                log(WARNING, "node %d left out: %s", node, err)
                continue
            self.profiles[node] = profile
            log(INFO, "node %d: partition %d, ratio %s (from %s), %d train examples", node,
                profile.partition_id, profile.ratio, profile.source, profile.num_examples)

    def _reference(self, part: str) -> dict[str, np.ndarray]:
        """The global tensors a reply part is shaped like (h, the hypergradient, is x-shaped)."""
        return self._global["x" if part == "h" else part]

    def _parse_reply(
        self, msg: Message, sent: _Sent | None, parts: tuple[str, ...]
    ) -> tuple[dict[str, np.ndarray], MetricRecord, float]:
        """The reply's tensors keyed ``part:param``, checked against what was sent, its metrics, and
        the largest per-coordinate RMS of its parts' updates."""
        if msg.has_error():
            raise ValueError(f"client error: {msg.error.reason}")
        if sent is None:
            raise ValueError("not sampled this round")
        content = msg.content
        if ARRAYS not in content.array_records or METRICS not in content.metric_records:
            raise ValueError(f"reply lacks the '{ARRAYS}' or '{METRICS}' record")
        if len(content) != 2:
            raise ValueError(f"reply has records {sorted(content)}, expected only '{ARRAYS}' and '{METRICS}'")
        metrics = content.metric_records[METRICS]
        check_examples(metrics, sent.profile.num_examples)
        record = content.array_records[ARRAYS]
        values: dict[str, np.ndarray] = {}
        rms = 0.0
        for part in parts:
            reference = self._reference(part)
            got = {key.partition(":")[2] for key in record if key.partition(":")[0] == part}
            if got != reference.keys():
                raise ValueError(f"part '{part}' has keys {sorted(got)}, expected {sorted(reference)}")
            squared_norm = 0.0
            for name, full in reference.items():
                key = f"{part}:{name}"
                value = decode(key, record[key], sent.index[name].shape(full.shape), full.dtype)
                update = value if part == "h" else value - sent.index[name].take(full)
                squared_norm += float(np.sum(np.square(update, dtype=np.float64)))
                values[key] = value
            if not np.sqrt(squared_norm) <= self.max_update_norm:
                raise ValueError(f"update norm of part '{part}' is {np.sqrt(squared_norm):.3g}, "
                                 f"above max-update-norm={self.max_update_norm:g}")
            size = sum(v.size for k, v in values.items() if k.startswith(f"{part}:"))
            rms = max(rms, float(np.sqrt(squared_norm / max(size, 1))))
        if unknown := [k for k in record if k.partition(":")[0] not in parts]:
            raise ValueError(f"unexpected arrays {sorted(unknown)[:4]}")
        return values, metrics, rms

    def _rms_reference(self, ratio: float, round_rms: list[tuple[float, float]]) -> tuple[float, str]:
        """The update RMS a reply at ``ratio`` is compared with, and what it is taken from.

        Smaller submodels take larger steps per coordinate, so a reply is compared with the replies
        at its own ratio: the median of this round's and of the last ``RMS_HISTORY`` accepted ones,
        when they are at least 3. With 2, the smaller of them, or the round's median if larger
        (a 10x reply does not raise the reference of its one peer). With 1, the round's median."""
        pool = [rms for r, rms in round_rms if r == ratio] + self._rms_history.get(ratio, [])
        everyone = float(np.median([rms for _, rms in round_rms]))
        if len(pool) >= 3:
            return float(np.median(pool)), f"{len(pool)} replies at ratio {ratio:g}"
        if len(pool) == 2:
            return max(min(pool), everyone), f"2 replies at ratio {ratio:g} and this round's"
        return everyone, "this round's replies"

    def _held_rows_only(
        self, values: dict[str, np.ndarray], index: dict[str, SliceIndex], held: object
    ) -> tuple[dict[str, np.ndarray], dict[str, SliceIndex]]:
        """A client with masked-loss trained the classifier rows of the classes it holds only: its
        other rows of y and v (what it was sent, or pulled by the regulariser alone) leave the average
        of those rows to the clients that hold the class (HeteroFL's masked aggregation)."""
        classifier = self.layers[-1]
        if classifier.prunable:
            return values, index
        rows = np.asarray(held if isinstance(held, list) else [], dtype=np.int64)
        if rows.size == 0 or len(set(rows.tolist())) != rows.size or rows.min() < 0 \
                or rows.max() >= classifier.width:
            raise ValueError(f"held-classes={held!r} is not a list of distinct classes in "
                             f"[0, {classifier.width})")
        rows = np.sort(rows)
        values, index = dict(values), dict(index)
        for key in list(values):
            part, name = key.split(":", 1)
            if part in ("y", "v") and name in (f"{classifier.name}.weight", f"{classifier.name}.bias"):
                full = index[key]
                values[key] = values[key][rows]
                index[key] = SliceIndex(full.out[rows], full.inp)
        return values, index

    def _new_global(self, acc: CoverageAverage) -> dict[str, dict[str, np.ndarray]]:
        def averaged(part: str, previous: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            avg = acc.average({f"{part}:{k}": t for k, t in previous.items()})
            return {k.split(":", 1)[1]: t for k, t in avg.items()}

        old = self._global
        new = {"y": averaged("y", old["y"]), "v": averaged("v", old["v"])}
        if self.algorithm == "rafbo":
            new["x"] = averaged("x", old["x"])
        else:  # rabo: heavy-ball step on the per-coordinate average hypergradient (h = 0 if uncovered)
            h = averaged("h", {k: np.zeros_like(t) for k, t in old["x"].items()})
            velocity = {k: self.outer_momentum * self._velocity.get(k, 0.0) + h[k] for k in h}
            if self.momentum_scope == "covered":  # uncovered coordinates: x and velocity stay put
                covered = {k: acc.weights[f"h:{k}"] > 0 for k in h}
                velocity = {k: np.where(covered[k], velocity[k], self._velocity.get(k, 0.0)) for k in h}
                step = {k: np.where(covered[k], velocity[k], 0.0) for k in h}
            else:
                step = velocity
            self._velocity = velocity
            new["x"] = {k: (t - self.outer_lr * step[k]).astype(t.dtype) for k, t in old["x"].items()}
        return {part: new[part] for part in ("x", "y", "v")}

    def _round_metrics(
        self, server_round: int, acc: CoverageAverage, accepted: list[tuple[_Sent, MetricRecord]],
        failed: int,
    ) -> MetricRecord:
        x_part = "h" if self.algorithm == "rabo" else "x"
        x_keys = [f"{x_part}:{k}" for k in self._global["x"]]
        y_keys = [f"y:{k}" for k in self._global["y"]]
        total = sum(float(m["num-examples"]) for _, m in accepted)  # type: ignore[arg-type]
        out: dict[str, float | int] = {
            "coverage-x-min": acc.min_coverage(x_keys),
            "coverage-y-min": acc.min_coverage(y_keys),
            "coverage-x-mean": acc.mean_coverage(x_keys),
            "coverage-y-mean": acc.mean_coverage(y_keys),
            "coverage-x-fraction": acc.covered_fraction(x_keys),
            "coverage-y-fraction": acc.covered_fraction(y_keys),
            "replies": len(accepted),
            "failed-replies": failed,
            "tolerated-byzantine-min": acc.tolerated([*x_keys, *y_keys]),
            "num-examples": int(total),
        }
        server_keys = set(out)
        for _, metrics in accepted:
            weight = float(metrics["num-examples"]) / total  # type: ignore[arg-type]
            for key, value in metrics.items():
                if (key in server_keys or key in ("partition-id",) or isinstance(value, bool)
                        or not isinstance(value, (int, float)) or not math.isfinite(value)):
                    continue  # the server's own figures and identity keys are never a client's to set
                out[key] = out.get(key, 0.0) + weight * float(value)
        return MetricRecord(out)
