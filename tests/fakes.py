"""What the tests share: a fast run config, the built-in strategy built from a run config, the
global models of the test tasks, fake ClientApps that answer with chosen profiles and replies,
and a fake SuperLink whose nodes answer late."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from rabo_protocol import parse_run_config
from rabo_protocol.wire import ARRAYS, METRICS, PROFILE, pack, unpack
from rabo_pruning.masks import MaskPolicy
from rabo_strategy import ResourceAdaptiveBilevel
from tasks import HyperRepresentation, LayerSpec, split_params

Parts = dict[str, dict[str, np.ndarray]]
"""A model or a reply by part (``x``, ``y``, ``v``, ``h``), then by parameter name."""
ClientFn = Callable[[Message, Context], Message]
"""A ClientApp function, as :class:`server_app.inprocess.InProcessGrid` calls it."""

FAST_CONFIG = {
    "dataset": "sklearn-digits",
    "num-server-rounds": 3,
    "inner-steps": 3,
    "v-steps": 3,
    "outer-steps": 2,
    "batch-size": 32,
    "profile": False,
}
"""A run config small enough for a real run of the apps in a test: 3 rounds of a few steps."""

STRATEGY_DEFAULTS = {"outer-momentum": 0.0, "momentum-scope": "all", "max-update-norm": 1e300,
                     "mask-policy": "static", "min-agreement": -1.0, "clip-factor": 0.0,
                     "max-update-norm-ratio": 0.0, "screen-reference": "peers"}
"""Where the tests' strategies differ from the run config's defaults: plain averaging of the
replies (no momentum, no norm bound, no agreement screen, so no server reference) and the static
masks, unless a test says otherwise."""

DIGITS_TASK = HyperRepresentation(in_shape=(1, 8, 8), num_classes=10)
"""The test task: the CNN on 8x8 digits at its default widths."""
SMALL_DIGITS_TASK = HyperRepresentation(in_shape=(1, 8, 8), num_classes=10, conv1=4, conv2=6, fc1=8)
"""The same CNN, narrow: for tests of many rounds or many drawn cases."""


def built_in_strategy(layers: tuple[LayerSpec, ...], *, mask: MaskPolicy | None = None,
                      **keys: object) -> ResourceAdaptiveBilevel:
    """The built-in strategy for ``layers`` with the run config ``keys`` (``outer_lr=0.5`` is the
    key ``outer-lr``) over :data:`STRATEGY_DEFAULTS`; ``mask`` overrides the mask policy."""
    cfg = parse_run_config({**STRATEGY_DEFAULTS, **{k.replace("_", "-"): v for k, v in keys.items()}})
    return ResourceAdaptiveBilevel(layers, cfg, mask_policy=mask)


def initial_model(task: HyperRepresentation) -> Parts:
    """The global model of ``task`` before round 1: x and y of the model built under torch seed 0,
    and v zero."""
    torch.manual_seed(0)
    x, y = split_params(task.build_model(task.full_widths()), task.layers)
    return {"x": {k: t.numpy() for k, t in x.items()}, "y": {k: t.numpy() for k, t in y.items()},
            "v": {k: np.zeros_like(t.numpy()) for k, t in y.items()}}


def profile_reply(msg: Message, profile: Mapping[str, Any]) -> Message:
    """The node's answer to the server's profile query ``msg``: ``profile`` as its ConfigRecord."""
    return Message(RecordDict({PROFILE: ConfigRecord(dict(profile))}), reply_to=msg)


def train_reply(msg: Message, parts: Parts, metrics: Mapping[str, Any]) -> Message:
    """The built-in strategy's reply format to the train message ``msg``: ``parts`` and ``metrics``."""
    return Message(RecordDict({ARRAYS: pack(parts), METRICS: MetricRecord(dict(metrics))}), reply_to=msg)


def fake_client(profile: Callable[[int], Mapping[str, Any]],
                train: Callable[[Message, int], Message]) -> ClientFn:
    """A ClientApp function that answers the profile query with ``profile(partition_id)`` and any
    other message with ``train(msg, partition_id)``."""
    def client(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if msg.metadata.message_type == "query":
            return profile_reply(msg, profile(pid))
        return train(msg, pid)

    return client


def _plus_noise(parts: Parts, rng: np.random.Generator, scale: float) -> Parts:
    return {p: {k: a + rng.normal(scale=scale, size=a.shape).astype(a.dtype) for k, a in d.items()}
            for p, d in parts.items()}


def noisy_update(sent: Parts, pid: int, algorithm: str) -> Parts:
    """An honest client's reply: ``sent`` plus Gaussian noise of std 0.1, seeded by the partition
    id ``pid``; for ``rabo`` a standard normal draw of x's shape takes x's place as ``h``."""
    rng = np.random.default_rng(pid)
    out = _plus_noise(sent, rng, 0.1)
    if algorithm == "rabo":
        out["h"] = {k: rng.normal(size=a.shape).astype(a.dtype) for k, a in out.pop("x").items()}
    return out


def noisy_client(algorithm: str, broken: dict[int, str] | None = None) -> ClientFn:
    """Profile ``{partition-id}`` only; replies with the received parts + standard normal noise
    seeded by the partition id (for ``rabo`` the noisy x is sent as ``h``), num-examples
    10 * (partition + 1) and inner-loss = partition. ``broken[pid]`` makes partition ``pid``
    ``"raise"``, reply y of the wrong ``"shape"`` or a ``"nan"`` in v."""
    broken = broken or {}

    def train(msg: Message, pid: int) -> Message:
        if broken.get(pid) == "raise":
            raise RuntimeError("client crashed")
        noisy = _plus_noise(unpack(msg.content[ARRAYS]), np.random.default_rng(pid), 1.0)
        if algorithm == "rabo":
            noisy["h"] = noisy.pop("x")
        if broken.get(pid) == "shape":
            noisy["y"] = {k: a[:1] for k, a in noisy["y"].items()}
        if broken.get(pid) == "nan":
            next(iter(noisy["v"].values()))[0] = np.nan
        return train_reply(msg, noisy, {"num-examples": 10 * (pid + 1), "inner-loss": float(pid)})

    return fake_client(lambda pid: {"partition-id": pid}, train)


class DelayedSuperLink(Grid):
    """A SuperLink (not synchronous) whose node ``n`` answers a pushed message ``delays[n]`` seconds
    after the push with ``answer(message)`` (default: an empty reply; None: no answer), and whose
    pull of that reply then takes ``uploads[n]`` seconds (the node still uploading it). ``sent``
    lists every message pushed."""

    def __init__(self, delays: Mapping[int, float], uploads: Mapping[int, float] | None = None,
                 answer: Callable[[Message], Message | None] | None = None) -> None:
        self.delays, self.uploads = dict(delays), dict(uploads or {})
        self.answer = answer or (lambda message: Message(RecordDict(), reply_to=message))
        self.sent: list[Message] = []
        self._ready: dict[str, tuple[float, Message]] = {}

    def get_node_ids(self) -> list[int]:
        return sorted(self.delays)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"{time.monotonic()}-{i}"
            self.sent.append(message)
            node = message.metadata.dst_node_id
            if (reply := self.answer(message)) is not None:
                reply.metadata.__dict__["_src_node_id"] = node
                self._ready[message.metadata.message_id] = (time.monotonic() + self.delays[node], reply)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        now = time.monotonic()
        out = [self._ready.pop(i)[1] for i in message_ids if i in self._ready and self._ready[i][0] <= now]
        time.sleep(max([self.uploads.get(r.metadata.src_node_id, 0.0) for r in out], default=0.0))
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        raise AssertionError("push and pull only: MeteredGrid and ProfileQueries poll themselves")

    create_message = set_run = run = None  # type: ignore[assignment]
