"""The client's side of differential privacy for sliced updates: a Flower mod on train messages.

With ``dp-clip`` C > 0 the server sends, with each train message, the planned coverage c_j of every
coordinate of the client's slices (``dp-coverage``) and the noise multiplier sigma. After the local
round, :func:`sliced_dp_mod` clips the reply's update (every part it carries, on the client's own
slices: x or h, y, v) to L2 norm C and adds N(0, sigma^2 C^2 / c_j) to coordinate j
(``rabo_protocol.privacy``: the sum over the c_j clients covering j then carries N(0, sigma^2 C^2)).
The noise is seeded by (seed, round, client), like every random choice of a run. With ``dp-clip``
0 (the default) the mod passes every message through untouched.

Unlike Flower's ``LocalDpMod`` (noise for each reply alone, keys of the reply equal to those sent),
it works on RABO's replies too (h in x's place) and its noise is 1 / sqrt(c_j) of a single
client's share of the release's.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from rabo_protocol import parse_node_config, parse_run_config
from rabo_protocol.privacy import COVERAGE, NOISE_KEY, clip_and_noise, coverage_key
from rabo_protocol.wire import ARRAYS, CONFIG, pack, unpack

__all__ = ["sliced_dp_mod"]


def sliced_dp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip and noise the train reply's update (``dp-clip`` > 0); any other message as it is."""
    if msg.metadata.message_type != "train":
        return call_next(msg, context)
    cfg = parse_run_config(context.run_config)
    if cfg.dp_clip == 0:
        return call_next(msg, context)
    config = msg.content[CONFIG]
    if COVERAGE not in msg.content.array_records or NOISE_KEY not in config:
        raise ValueError(f"dp-clip={cfg.dp_clip:g} but the train message lacks the '{COVERAGE}' record "
                         f"or '{NOISE_KEY}' (a built-in strategy sends both with dp-clip > 0)")
    counts = {key: array.numpy() for key, array in msg.content[COVERAGE].items()}
    sent = unpack(msg.content[ARRAYS])
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    got = unpack(reply.content[ARRAYS])
    updates = {f"{part}:{name}": value - (0.0 if part == "h" else sent[part][name])
               for part, tensors in got.items() for name, value in tensors.items()}
    if missing := sorted(coverage_key(k) for k in updates if coverage_key(k) not in counts):
        raise ValueError(f"the '{COVERAGE}' record lacks {missing[:4]}")
    node = parse_node_config(context.node_config)
    client_key = context.node_id if node.partition_id is None else node.partition_id
    rng = np.random.default_rng([cfg.seed, int(config["server-round"]), client_key, 11])  # type: ignore[arg-type]
    noised = clip_and_noise(updates, counts, cfg.dp_clip, float(config[NOISE_KEY]), rng)  # type: ignore[arg-type]
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, update in noised.items():
        part, name = key.split(":", 1)
        value = got[part][name]
        base = 0.0 if part == "h" else sent[part][name].astype(np.float64)
        out.setdefault(part, {})[name] = (base + update).astype(value.dtype)
    reply.content[ARRAYS] = pack(out)
    return reply
