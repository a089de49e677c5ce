"""The resource-adaptive bilevel Strategy (RABO / RAFBO) for Flower's Message API."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from rabo_protocol import RunConfig
from rabo_protocol.presets import DIRECTION_PART, PRESETS, REPLY_PARTS
from rabo_protocol.wire import pack, unpack
from rabo_pruning import CoverageAverage, make_mask_policy
from rabo_pruning.masks import MaskPolicy, RoundClient
from tasks import LayerSpec
from tasks.structure import Structure, as_structure

from .ahead import ServerUpdate
from .clock import RoundClock
from .contract import Row
from .intake import take_replies
from .lazy import LazyCheck
from .messages import Sent, train_messages
from .node_eval import NodeEvaluation, Statistics
from .node_sampling import NodeSampling
from .outer_update import OuterUpdate
from .privacy import SlicedPrivacy
from .profiles import NodeProfile, RoundSizer, admit_profiles
from .queries import ProfileQueries
from .replies import ParsedReply, class_rows, parse_reply
from .round_metrics import round_metrics
from .screen import AgreementScreen
from .step_norm import StepNormalization

SampleCoordsOf = Callable[[NodeProfile], Mapping[str, np.ndarray]]
"""A node's profile -> per-sample parameter name -> the global coordinates of its samples (empty
for tasks without per-sample parameters)."""


def _no_sample_coords(profile: NodeProfile) -> Mapping[str, np.ndarray]:
    return {}


def log_summary(algorithm: str, outer_lr: float, sizer: RoundSizer, sampling: NodeSampling) -> None:
    """Flower's strategy summary: the algorithm, sizing, ratio levels and sampling."""
    log(INFO, "\t├──> Algorithm: %s, outer-lr %s, sizing %s, capacity %s", algorithm, outer_lr, sizer.sizing,
        sizer.capacity)
    log(INFO, "\t├──> Ratio levels (by partition id): %s", sizer.levels)
    log(INFO, "\t└──> Sampling: fraction %.2f, min train nodes %d, min available %d",
        sampling.fraction_train, sampling.min_train_nodes, sampling.min_available_nodes)


class ResourceAdaptiveBilevel(Strategy):
    """Sends each sampled node the slices of x, y, v for its ratio; averages per coordinate. It is
    :class:`~rabo_strategy.contract.ServerFacing` (what the server records and checkpoints). Every
    setting comes from the validated run config ``cfg`` (docs/configuration.md): ``algorithm``,
    ``strategy`` (its sizing), ``ratio-levels``, ``capacity``, ``mask-policy``, the outer step
    (``outer-*``, ``momentum-scope``), sampling, reply checks, ``aggregation``.

    Args:
        layers: ``task.structure`` (its unit groups define every slice) or a layer list.
        cfg: the run config.
        sample_coords_of: the per-sample coordinates of a node (for tasks with per-sample x).
        client_config: sent to every node with each query, train and evaluate message.
        mask_policy: overrides the config's ``mask-policy`` (any :class:`MaskPolicy`).
        query_timeout: seconds before a node's unanswered query is dropped (``query-wait``: a round's wait).
        statistics: a submodel's BatchNorm statistics, sent with it to evaluate (``recalibrate``).
        server_update: the server's own update each round, made while the nodes train (``screen-reference``).
    """

    def __init__(self, layers: Structure | Sequence[LayerSpec], cfg: RunConfig, *,
                 sample_coords_of: SampleCoordsOf = _no_sample_coords,
                 client_config: Mapping[str, ConfigRecordValues] | None = None,
                 mask_policy: MaskPolicy | None = None, query_timeout: float = 120.0,
                 statistics: Statistics | None = None, server_update: ServerUpdate | None = None) -> None:
        if cfg.strategy not in PRESETS:
            raise ValueError(f"strategy '{cfg.strategy}' is not built in; allowed: {', '.join(PRESETS)}")
        self.structure, self.algorithm = as_structure(layers), cfg.algorithm
        self.sample_coords_of = sample_coords_of
        self.node_evaluation = NodeEvaluation(cfg.node_eval_every, cfg.num_server_rounds, statistics)
        self.mask_policy = mask_policy or make_mask_policy(
            cfg.mask_policy, cfg.seed, cfg.coverage_objective, cfg.ratio_levels)
        self.sizer = RoundSizer(cfg.ratio_levels, PRESETS[cfg.strategy].sizing, cfg.capacity, cfg.seed)
        self.sampling = NodeSampling(cfg.fraction_train, cfg.min_train_nodes, cfg.min_available_nodes,
                                     cfg.round_timeout, cfg.seed)
        self.outer = OuterUpdate(cfg.algorithm, cfg.outer_lr, cfg.outer_momentum, cfg.momentum_scope)
        self.steps = StepNormalization.of(cfg)
        self.privacy = SlicedPrivacy(cfg)  # dp-clip: rabo_strategy/privacy.py
        self.screen = AgreementScreen(*self.privacy.screen_settings(cfg), server_update=server_update)
        self.lazy, self.head_rows, self.aggregation = LazyCheck(), cfg.head_rows, cfg.aggregation
        self.clock, self.trim_fraction = RoundClock(cfg, self.sizer.sizing), cfg.trim_fraction
        self.max_update_norm, self.min_successful_replies = cfg.max_update_norm, cfg.min_successful_replies
        self.client_config, wait = dict(client_config or {}), cfg.profile_wait(self.sizer.sizing)
        self.queries = ProfileQueries(self.client_config, self.sizer.levels, wait, query_timeout)
        self.profiles: dict[int, NodeProfile] = {}
        self.accepted_ratios: dict[int, float] = {}
        """Node -> the ratio it trained at, for the replies the last ``aggregate_train`` accepted."""
        self._coords_by_node: dict[int, dict[str, np.ndarray]] = {}  # per-sample coordinates
        self._sent: dict[int, Sent] = {}  # this round's train messages, by node
        self._global: dict[str, dict[str, np.ndarray]] = {}

    def summary(self) -> None:
        log_summary(self.algorithm, self.outer.outer_lr, self.sizer, self.sampling)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._global = unpack(arrays)
        nodes = self.sampling.sample(grid, server_round)
        self.ensure_profiles(grid, nodes, server_round)
        params = {name: t for part in ("x", "y") for name, t in self._global[part].items()}
        # nodes without a profile (their query failed: logged there, retried next round) sit out
        # in partition order (node ids are random in a simulation): masks, and so results, follow the seed
        training = [(p, r) for p in sorted((self.profiles[n] for n in nodes if n in self.profiles),
                                           key=lambda p: (p.client_key, p.node_id))
                    if (r := self.sizer.ratio(p, server_round)) is not None]
        specs = self.mask_policy(self.structure, [RoundClient(p.client_key, r) for p, r in training],
                                 server_round, params)
        messages, self._sent = train_messages(
            self.structure, self._global, training, specs, self._coords_by_node,
            {**self.client_config, **dict(config.items())}, server_round)
        self.privacy.plan(messages, self._sent, self._global, len(nodes), len(list(grid.get_node_ids())))
        self.clock.sent(messages)
        self.screen.prepare(self._global, server_round)  # the server's reference, while the nodes train
        log(INFO, "configure_train: %d of %d nodes, ratios %s", len(messages),
            len(list(grid.get_node_ids())), sorted(s.ratio for s in self._sent.values()))
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        parts = REPLY_PARTS[self.algorithm]
        reference = {part: self._global["x" if part == "h" else part] for part in parts}
        intake = take_replies(replies, lambda msg: self._checked(msg, parts, reference, server_round),
                              self._sent)
        refused, unjudged, screened = self.screen.filter(list(intake.passed.values()), reference,
                                                         self._global, server_round)
        for node, reason in refused.items():
            intake.refuse(node, reason)
        intake.log(server_round)
        accepted = sorted(intake.passed.values(), key=lambda r: (r.sent.client_key, r.node))  # seeded sums

        shapes = {f"{part}:{name}": t.shape for part, full in reference.items() for name, t in full.items()}
        acc = CoverageAverage(shapes, self.aggregation, self.trim_fraction)  # type: ignore[arg-type]
        for reply in accepted:
            acc.add(reply.values, reply.index, self.privacy.weight(reply.metrics), reply.row_weights,
                    reply.untrained.slices)
        private = self.privacy.release(acc, self._sent, {r.node for r in accepted}, reference, server_round)
        self.accepted_ratios = {reply.node: reply.sent.ratio for reply in accepted}
        self.lazy.remember(self.accepted_ratios, server_round)
        self.clock.resize(self.profiles, {r.node: r.metrics for r in accepted}, intake.unanswered)
        metrics = round_metrics(acc, [f"{DIRECTION_PART[self.algorithm]}:{k}" for k in self._global["x"]],
                                [f"y:{k}" for k in self._global["y"]], [r.metrics for r in accepted],
                                intake.failed, unjudged, sum(r.untrained.rows for r in accepted))
        metrics.update({**self.clock.metrics(), "skipped": int(len(accepted) < self.min_successful_replies),
                        **private, **screened})
        if metrics["skipped"]:
            log(WARNING, "round %d skipped: %d valid replies, fewer than min-successful-replies=%d; "
                "the global model is unchanged", server_round, len(accepted), self.min_successful_replies)
            return None, metrics
        effective = self.steps.effective_steps(accepted, self.privacy.weight)  # step-normalization
        return pack(self.outer(self._global, acc, effective)), metrics

    def _checked(self, msg: Message, parts: Sequence[str], reference: Mapping[str, Mapping[str, np.ndarray]],
                 server_round: int) -> ParsedReply:
        """A train reply through every per-reply check: deadline, parse, step share, head rows, lazy."""
        node = msg.metadata.src_node_id
        if reason := self.clock.late(self.profiles.get(node), msg):
            raise ValueError(reason)
        reply = parse_reply(msg, self._sent[node], parts, reference, self.max_update_norm)
        reply = class_rows(self.steps.normalized(reply, reference), self.structure.classifier, self.head_rows)
        return replace(reply, untrained=self.lazy(node, reply.values, reply.index, reference, server_round))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Each connected node evaluates the submodel of its ratio (``node-eval-every``, ``node_eval``)."""
        profiles = [self.profiles[n] for n in grid.get_node_ids() if n in self.profiles]
        return self.node_evaluation.configure(server_round, self.structure, unpack(arrays), profiles,
                                              self._coords_by_node, {**self.client_config, **config})

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord:
        return self.node_evaluation.aggregate(server_round, list(replies))

    @property
    def node_eval_rows(self) -> Sequence[Row]:
        """The nodes' own evaluations so far (``node-eval-every``)."""
        return self.node_evaluation.rows

    def state(self) -> dict[str, object]:
        """What a checkpoint needs to resume this strategy exactly (node profiles are re-queried)."""
        return {"velocity": dict(self.outer.velocity), **self.screen.state(),
                "node-eval-rows": list(self.node_evaluation.rows), **self.privacy.state()}

    def load_state(self, state: dict[str, object]) -> None:
        self.outer.velocity = dict(state["velocity"])  # type: ignore[call-overload]
        self.screen.load_state(state)
        self.node_evaluation.rows = list(state.get("node-eval-rows", []))  # type: ignore[call-overload]
        self.privacy.load(state)

    def ensure_profiles(self, grid: Grid, nodes: list[int], server_round: int) -> None:
        """Query the ``nodes`` without a profile yet; admit the answers that came (``ProfileQueries``)."""
        self.queries.ask(grid, [n for n in nodes if n not in self.profiles], server_round)
        admit_profiles(self.queries.answers(grid), self.sample_coords_of, self.profiles, self._coords_by_node,
                       grid)
