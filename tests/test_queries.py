"""Node profiles asked for without holding up the rounds (rabo_strategy/queries.py, ``query-wait``)."""

from __future__ import annotations

import time

import pytest
from flwr.app import ConfigRecord, Message

from rabo_protocol import ConfigError, parse_run_config
from rabo_protocol.presets import PRESETS
from rabo_protocol.wire import CONFIG, pack
from rabo_strategy.queries import ProfileQueries
from tests.fakes import SMALL_DIGITS_TASK, DelayedSuperLink, built_in_strategy, initial_model, profile_reply


def _superlink(delays: dict[int, float]) -> DelayedSuperLink:
    """Node ``n`` (partition ``n - 1000``) answers a query ``delays[n]`` seconds after the push;
    train messages get no answer."""
    def answer(message: Message) -> Message | None:
        if message.metadata.message_type != "query":
            return None
        node = message.metadata.dst_node_id
        return profile_reply(message, {"partition-id": node - 1000, "num-partitions": len(delays)})

    return DelayedSuperLink(delays, answer=answer)


def _asked(grid: DelayedSuperLink) -> dict[int, int]:
    """The queries each node was sent."""
    return {n: sum(m.metadata.dst_node_id == n and m.metadata.message_type == "query" for m in grid.sent)
            for n in grid.delays}


def test_a_round_waits_query_wait_for_a_profile_and_takes_a_later_one_at_the_next_round() -> None:
    grid = _superlink({1000: 0.02, 1001: 1.0})
    queries = ProfileQueries({}, (1.0, 0.5), wait=0.2, timeout=60.0)
    queries.ask(grid, [1000, 1001], server_round=1)
    start = time.monotonic()
    assert list(queries.answers(grid)) == [1000]
    assert 0.2 <= time.monotonic() - start < 0.7  # its wait, not the slow node's 1 s
    assert queries.pending == {1001}
    queries.ask(grid, [1001], server_round=2)  # pending: not asked again
    assert _asked(grid) == {1000: 1, 1001: 1}
    time.sleep(0.9)
    start = time.monotonic()
    assert list(queries.answers(grid)) == [1001] and queries.pending == set()
    assert time.monotonic() - start < 0.1  # its wait was over: the answer that came is taken


def test_an_unanswered_query_is_dropped_after_its_timeout_and_the_node_asked_again() -> None:
    grid = _superlink({1000: 30.0})
    queries = ProfileQueries({}, (1.0,), wait=None, timeout=0.1)
    queries.ask(grid, [1000], server_round=1)
    assert queries.answers(grid) == {} and queries.pending == set()
    queries.ask(grid, [1000], server_round=2)
    assert _asked(grid) == {1000: 2}


def test_a_deadline_round_starts_without_a_slow_profile_and_trains_the_node_after() -> None:
    """query-wait='deadline' (round-deadline 0.2 s, resource-adaptive): round 1 trains the node
    that answered in time; the slow node's answer (1 s) comes during round 1, and it trains in round 2."""
    strategy = built_in_strategy(SMALL_DIGITS_TASK.layers, ratio_levels=(1.0,), round_deadline=0.2,
                                 min_available_nodes=2)
    grid = _superlink({1000: 0.02, 1001: 1.0})
    arrays = pack(initial_model(SMALL_DIGITS_TASK))
    start = time.monotonic()
    first = strategy.configure_train(1, arrays, ConfigRecord(), grid)
    assert [m.metadata.dst_node_id for m in first] == [1000] and time.monotonic() - start < 0.7
    time.sleep(1.0)  # round 1's train time
    second = strategy.configure_train(2, arrays, ConfigRecord(), grid)
    assert [m.metadata.dst_node_id for m in second] == [1000, 1001]
    assert _asked(grid) == {1000: 1, 1001: 1}


@pytest.mark.parametrize(("keys", "wait"), [
    ({"round-deadline": 12.0}, 12.0),  # resource-adaptive rounds close at the deadline
    ({"round-deadline": 12.0, "strategy": "full-model"}, None),  # it waits for its nodes
    ({"round-deadline": 12.0, "strategy": "drop-weak"}, None),
    ({"round-deadline": 12.0, "device-classes": "laptop"}, None),  # the virtual clock
    ({}, None),  # no deadline
    ({"round-deadline": 12.0, "query-wait": "all"}, None),
    ({"query-wait": 3}, 3.0),
])
def test_query_wait_defaults_to_the_deadline_where_rounds_close_at_it(keys: dict[str, object],
                                                                      wait: float | None) -> None:
    cfg = parse_run_config(keys)
    assert cfg.profile_wait(PRESETS[cfg.strategy].sizing) == wait


def test_a_bad_query_wait_names_the_key_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match="query-wait") as err:
        parse_run_config({"query-wait": "soon"})
    assert "deadline" in str(err.value) and "all" in str(err.value)
    with pytest.raises(ConfigError, match="query-wait"):
        parse_run_config({"query-wait": -1})


def test_query_messages_carry_the_strategy_config_and_the_round() -> None:
    grid = _superlink({1000: 0.0})
    ProfileQueries({"task": "x"}, (1.0,), wait=0.1, timeout=1.0).ask(grid, [1000, 1000], server_round=4)
    (query,) = grid.sent  # one per node
    assert dict(query.content[CONFIG]) == {"task": "x", "server-round": 4}
    assert query.metadata.message_type == "query" and query.metadata.group_id == "profile-4"
