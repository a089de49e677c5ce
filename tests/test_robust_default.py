"""The defaults hold against dishonest clients: the agreement screen, clipping, lazy-client checks."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message

from rabo_protocol.wire import ARRAYS, pack, unpack
from rabo_pruning import make_mask_policy
from rabo_strategy import ResourceAdaptiveBilevel
from server_app.inprocess import InProcessGrid
from tests.fakes import SMALL_DIGITS_TASK, built_in_strategy, fake_client, initial_model, train_reply

TASK = SMALL_DIGITS_TASK
SCREEN = {"min_agreement": -0.1, "max_update_norm_ratio": 10.0}  # the run config's defaults


def _client(ratios: list[float], attackers: dict[int, float], lazy: str = ""):  # noqa: ANN202
    """Honest clients move every coordinate along one shared direction plus their own noise; an
    attacker sends that update reversed and ``attackers[pid]`` times larger (a negative scale: in
    the honest direction, ``-attackers[pid]`` times larger). ``lazy``: partition 0
    pads half its rows with the sent values (``pad``) or replays its previous reply (``replay``)."""
    previous: dict[int, dict] = {}

    def train(msg: Message, pid: int) -> Message:
        sent = unpack(msg.content[ARRAYS])
        rng = np.random.default_rng([pid, int(msg.metadata.group_id or 0)])
        out = {}
        for part, tensors in sent.items():
            out[part] = {}
            for name, value in tensors.items():
                update = 0.1 + rng.normal(scale=0.05, size=value.shape)
                update *= -attackers.get(pid, -1.0)
                out[part][name] = (value + update).astype(value.dtype)
                if lazy == "pad" and pid == 0 and value.ndim:
                    out[part][name][len(value) // 2:] = value[len(value) // 2:]
        if lazy == "replay" and pid == 0 and 0 in previous:
            out = previous[0]
        previous[pid] = out
        return train_reply(msg, out, {"num-examples": 10})

    return fake_client(lambda pid: {"partition-id": pid, "resource-ratio": ratios[pid]}, train)


def _round(strategy: ResourceAdaptiveBilevel, grid: InProcessGrid, rnd: int,
           model: dict) -> tuple[dict, dict]:
    messages = strategy.configure_train(rnd, pack(model), ConfigRecord(), grid)
    arrays, metrics = strategy.aggregate_train(rnd, list(grid.send_and_receive(messages)))
    return (unpack(arrays) if arrays is not None else model), dict(metrics)


def _strategy(levels: tuple[float, ...], **keys: object) -> ResourceAdaptiveBilevel:
    return built_in_strategy(TASK.layers, mask=make_mask_policy("static", 0), algorithm="rafbo",
                             ratio_levels=levels, outer_lr=0.5, max_update_norm=1e3, min_train_nodes=1,
                             min_available_nodes=1, **keys)


CASES = {  # attack -> (ratios by partition, attacker partition -> scale)
    "one of ten reversed inside max-update-norm": ([1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5], {0: 10.0}),
    "the whole 1/8 group colludes": ([1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5], {3: 10.0, 7: 10.0}),
    "the three full-size clients attack": ([1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5],
                                           {0: 10.0, 4: 10.0, 8: 10.0}),
    "one full-size reversed x2.5": ([1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5], {0: 2.5}),
    "one of ten 10x larger in the honest direction": ([1.0, 0.5, 0.25, 0.125] * 2 + [1.0, 0.5], {5: -10.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_default_screen_refuses_reversed_updates(case: str) -> None:
    """Without the screen (the previous defaults) every attacker is accepted; with it each is
    refused, every round (by its direction, or by its size against the others at its ratio), and
    no honest reply is. The three full-size attackers are 3 of the 5
    others on every coordinate a 1/2 client trains beyond the first quarter (static masks): the
    first pass compares each reply with the other ratios' median too, so they are refused there,
    and the second pass judges the 1/2 clients against the accepted replies only."""
    ratios, attackers = CASES[case]
    grid = InProcessGrid(_client(ratios, attackers), len(ratios), {})
    unscreened, screened = _strategy((1.0,), min_agreement=-1.0), _strategy((1.0,), **SCREEN)
    model = initial_model(TASK)
    for rnd in (1, 2):
        _, before = _round(unscreened, grid, rnd, model)
        _, after = _round(screened, grid, rnd, model)
        assert before["failed-replies"] == 0
        assert set(screened.accepted_ratios) == {n for n in grid.get_node_ids() if n - 1000 not in attackers}


def test_rows_left_as_sent_do_not_count_as_trained() -> None:
    """A client that trains half the rows it was sent and pads the rest with the sent values: the
    padded rows are counted as untrained and left out of the trained coverage."""
    grid = InProcessGrid(_client([1.0] * 3, {}, lazy="pad"), 3, {})
    honest_grid = InProcessGrid(_client([1.0] * 3, {}), 3, {})
    _, honest = _round(_strategy((1.0,)), honest_grid, 1, initial_model(TASK))
    _, padded = _round(_strategy((1.0,)), grid, 1, initial_model(TASK))
    assert honest["untrained-rows"] == 0 and padded["untrained-rows"] > 0
    assert padded["coverage-y-trained-min"] == 2 and honest["coverage-y-trained-min"] == 3
    assert padded["coverage-y-min"] == honest["coverage-y-min"] == 3  # the masks' coverage
    assert padded["replies"] == 3


def test_a_replayed_reply_is_refused() -> None:
    """Partition 0 sends its previous round's reply again: refused in round 2."""
    strategy, grid = _strategy((1.0,)), InProcessGrid(_client([1.0] * 3, {}, lazy="replay"), 3, {})
    model, first = _round(strategy, grid, 1, initial_model(TASK))
    _, second = _round(strategy, grid, 2, model)
    assert first["failed-replies"] == 0 and second["failed-replies"] == 1
    assert 1000 not in strategy.accepted_ratios


def test_a_reply_that_trained_nothing_is_refused() -> None:
    def train(msg: Message, pid: int) -> Message:
        return train_reply(msg, unpack(msg.content[ARRAYS]), {"num-examples": 10})

    grid = InProcessGrid(fake_client(lambda pid: {"partition-id": pid, "resource-ratio": 1.0}, train), 2, {})
    _, metrics = _round(_strategy((1.0,)), grid, 1, initial_model(TASK))
    assert metrics["replies"] == 0 and metrics["failed-replies"] == 2


def test_a_node_that_turns_after_a_good_record_is_refused_in_its_second_bad_round() -> None:
    """Honest for 4 rounds, then reversed: its mean agreement is still good, its fast average
    (weight 0.5 on the past) is not."""
    turned: dict[int, float] = {}
    client = _client([1.0] * 6, turned)
    grid = InProcessGrid(client, 6, {})
    strategy, model = _strategy((1.0,), **SCREEN), initial_model(TASK)
    refused = []
    for rnd in range(1, 8):
        if rnd == 5:
            turned[0] = 1.0
        model, metrics = _round(strategy, grid, rnd, model)
        refused.append(1000 not in strategy.accepted_ratios)
    assert refused == [False] * 5 + [True] * 2
