"""The server's side of differential privacy for sliced updates (``dp-clip`` > 0): the planned
coverage sent with each train message, the noise of missing replies, and the privacy accounting.

The mechanism and its sensitivity are :mod:`rabo_protocol.privacy`'s. Here:

- **Coverage.** Before sending, c_j = the number of this round's train messages whose slice holds
  coordinate j (x for x and h, y for y and v); each node gets its slice of the counts
  (``dp-coverage``) and sigma (``dp-noise-multiplier``) with its train message.
- **Missing replies.** A planned client whose reply fails, comes late or is refused counts as a zero
  update: the server adds, in its place, its slices as sent plus its noise share
  N(0, sigma^2 C^2 / c_j) (seeded by seed, round, client), so every coordinate's sum carries
  N(0, sigma^2 C^2) as accounted, and every reply weighs 1 (num-examples is a client's claim and
  would scale its sensitivity). Those stand-ins count in the masks' coverage, not in the trained one.
- **Accounting.** One Gaussian event per round in Flower's RDP accountant (``dp-epsilon`` in the
  round metrics: the epsilon spent so far at ``dp-delta``). With ``fraction-train`` = 1 there is no
  sampling: the event has noise multiplier sigma under add-or-remove-one (equivalently zero-out,
  Kairouz et al. 2021: a client's data replaced by a zero update; the counts c_j are public).
  With ``fraction-train`` < 1 the round's nodes are a fixed-size draw without replacement of the
  connected ones, which Flower accounts under replace-one: one client's clipped update replaced by
  another moves the sum by up to 2C, so the event's multiplier is sigma / 2, amplified by
  sampled / connected; a round whose number of connected nodes differs from the first round's
  claims no amplification (q = 1). sigma is calibrated once (bisection on the same accountant) so
  that ``num-server-rounds`` such rounds spend ``dp-epsilon``, unless ``dp-noise-multiplier`` > 0.

The guarantee covers what the server releases (the global model after every round); a single reply
carries only its 1 / c_j share of the noise, so it is protected from the server itself only under
secure aggregation, which a per-coordinate screen cannot run under: with DP the agreement screen is
off (its verdicts on one client depend on the others' updates, outside the sensitivity bound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord

from rabo_protocol import RunConfig
from rabo_protocol.flwr_compat import (  # Flower's RDP accountant, behind the version check
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from rabo_protocol.privacy import COVERAGE, NOISE_KEY, clip_and_noise, coverage_key
from rabo_protocol.wire import CONFIG
from rabo_pruning.aggregation import CoverageAverage
from rabo_pruning.submodel import SliceIndex

from .messages import Sent

__all__ = ["SlicedPrivacy", "calibrate"]


def _accountant(amplified: bool, population: int, delta: float) -> RdpAccountant:
    method = SamplingMethod.WITHOUT_REPLACEMENT if amplified else SamplingMethod.NO_AMPLIFICATION
    relation = NeighboringRelation.REPLACE_ONE if amplified else NeighboringRelation.ADD_OR_REMOVE_ONE
    return RdpAccountant(PrivacyConfig(delta, population, relation, method))


def _event(sigma: float, amplified: bool, sampled: int, population: int) -> GaussianPrivacyEvent:
    """Sensitivity C (add-or-remove) or 2C (replace-one): the multiplier is sigma or sigma / 2."""
    return GaussianPrivacyEvent(sigma / 2 if amplified else sigma, sampled, population)


def calibrate(epsilon: float, delta: float, rounds: int, amplified: bool, sampled: int,
              population: int) -> float:
    """The smallest sigma (to 0.5 %, in [0.05, 10^4]) whose ``rounds`` events spend at most
    ``epsilon`` at ``delta``."""
    def spent(sigma: float) -> float:
        accountant = _accountant(amplified, population, delta)
        accountant.compose(_event(sigma, amplified, sampled, population), rounds)
        return accountant.get_epsilon(delta)

    low, high = 0.05, 1e4
    while high / low > 1.005:
        middle = float(np.sqrt(low * high))
        low, high = (low, middle) if spent(middle) <= epsilon else (middle, high)
    return high


class SlicedPrivacy:
    """Coverage, top-up noise and accounting of one run (every method does nothing with
    ``dp-clip`` = 0, ``on`` False: the run is bit-exact the run without it); ``state`` / ``load``
    for resume."""

    def __init__(self, cfg: RunConfig) -> None:
        self.on = cfg.dp_clip > 0
        self.clip, self.epsilon, self.delta = cfg.dp_clip, cfg.dp_epsilon, cfg.dp_delta
        self.rounds, self.seed, self.amplified = cfg.num_server_rounds, cfg.seed, cfg.fraction_train < 1
        self.sigma: float | None = cfg.dp_noise_multiplier or None
        self.population: int | None = None
        self.accountant: RdpAccountant | None = None
        self.counts: dict[str, np.ndarray] = {}
        self._sampled = 0

    def plan(self, messages: Sequence[Message], sent: Mapping[int, Sent],
             parts: Mapping[str, Mapping[str, np.ndarray]], sampled: int, connected: int) -> None:
        """This round's planned coverage over the nodes ``sent`` a message (the global ``parts``
        give x's and y's shapes); adds each message its slice of it and sigma. ``sampled`` of
        ``connected`` nodes were drawn (the first round fixes the accountant's population and
        calibrates sigma)."""
        if not self.on:
            return
        if self.population is None:
            self.population = connected
            self.accountant = _accountant(self.amplified, connected, self.delta)
        self._sampled = sampled if connected == self.population else self.population
        if self.sigma is None:
            self.sigma = calibrate(self.epsilon, self.delta, self.rounds, self.amplified, self._sampled,
                                   self.population)
        self.counts = {f"{part}:{name}": np.zeros(t.shape, dtype=np.int64)
                       for part in ("x", "y") for name, t in parts[part].items()}
        for node_sent in sent.values():
            for key, counts in self.counts.items():
                index = node_sent.index[key.split(":", 1)[1]]
                index.add_into(counts, np.ones(index.shape(counts.shape), dtype=np.int64))
        dtype = np.uint16 if len(sent) < 2**16 else np.uint32
        for msg in messages:
            index = sent[msg.metadata.dst_node_id].index
            msg.content[COVERAGE] = ArrayRecord({
                key: Array(np.ascontiguousarray(index[key.split(":", 1)[1]].take(c).astype(dtype)))
                for key, c in self.counts.items()})
            msg.content[CONFIG][NOISE_KEY] = self.sigma

    def screen_settings(self, cfg: RunConfig) -> tuple[float, float, float, str]:
        """The agreement screen's ``min-agreement``, ``max-update-norm-ratio``, ``clip-factor`` and
        ``screen-reference``: the run config's, all off with DP (a verdict on one reply depends on the
        others' updates, so a refusal would move the sum by more than the sensitivity of the client
        who caused it)."""
        settings = (cfg.min_agreement, cfg.max_update_norm_ratio, cfg.clip_factor, cfg.screen_reference)
        return (-1.0, 0.0, 0.0, "peers") if self.on else settings

    def weight(self, metrics: MetricRecord) -> float:
        """A reply's weight in the average: its num-examples, or 1 with DP (a sum's sensitivity)."""
        return 1.0 if self.on else float(metrics["num-examples"])  # type: ignore[arg-type]

    def release(self, acc: CoverageAverage, sent: Mapping[int, Sent], accepted: Set[int],
                reference: Mapping[str, Mapping[str, np.ndarray]], server_round: int) -> dict[str, float]:
        """Add to ``acc``, for each planned node (``sent``) not ``accepted``, a zero update plus its
        noise share (weight 1), then account the round: its metrics."""
        if not self.on:
            return {}
        self._top_up([s for node, s in sent.items() if node not in accepted], reference, acc, server_round)
        return self._account()

    def _top_up(self, missing: list[Sent], reference: Mapping[str, Mapping[str, np.ndarray]],
                acc: CoverageAverage, server_round: int) -> None:
        assert self.sigma is not None
        for sent in sorted(missing, key=lambda s: s.client_key):
            index = {f"{part}:{name}": sent.index[name] for part in reference for name in reference[part]}
            counts = {key: index[key].take(self.counts[coverage_key(key)]) for key in index}
            zeros = {key: np.zeros(index[key].shape(self.counts[coverage_key(key)].shape)) for key in index}
            rng = np.random.default_rng([self.seed, server_round, sent.client_key, 13])
            noise = clip_and_noise(zeros, counts, self.clip, self.sigma, rng)
            values = {}
            for key, value in noise.items():
                part, name = key.split(":", 1)
                full = reference[part][name]
                base = 0.0 if part == "h" else index[key].take(full)
                values[key] = (base + value).astype(full.dtype)
            acc.add(values, index, 1.0, untrained=dict[str, SliceIndex](index))

    def _account(self) -> dict[str, float]:
        """Compose this round's release; the epsilon spent so far at ``dp-delta``, and sigma."""
        assert self.accountant is not None and self.sigma is not None and self.population is not None
        self.accountant.compose(_event(self.sigma, self.amplified, self._sampled, self.population))
        return {"dp-epsilon": self.accountant.get_epsilon(self.delta), "dp-noise-multiplier": self.sigma}

    def state(self) -> dict[str, object]:
        """The strategy state's ``privacy`` entry (none when off): sigma, population, the ledger."""
        if not self.on:
            return {}
        return {"privacy": {"sigma": self.sigma, "population": self.population,
                            "accountant": None if self.accountant is None else self.accountant.state_dict()}}

    def load(self, strategy_state: Mapping[str, object]) -> None:
        if not self.on or (state := strategy_state.get("privacy")) is None:
            return
        assert isinstance(state, dict)
        self.sigma = state.get("sigma")  # type: ignore[assignment]
        self.population = state.get("population")  # type: ignore[assignment]
        if (ledger := state.get("accountant")) is not None:
            assert self.population is not None
            self.accountant = _accountant(self.amplified, self.population, self.delta)
            self.accountant.load_state_dict(ledger)  # type: ignore[arg-type]
