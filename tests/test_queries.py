"""Node profiles asked for without holding up the rounds (rabo_strategy/queries.py, ``query-wait``)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from rabo_protocol import ConfigError, parse_run_config
from rabo_protocol.presets import PRESETS
from rabo_protocol.wire import CONFIG, pack
from rabo_strategy.queries import ProfileQueries
from tests.fakes import SMALL_DIGITS_TASK, built_in_strategy, initial_model, profile_reply


class _AnsweringSuperLink(Grid):
    """A SuperLink whose node ``n`` (partition ``n - 1000``) answers a query ``delays[n]`` seconds
    after the push; train messages get no answer. Counts the queries each node was sent."""

    def __init__(self, delays: dict[int, float]) -> None:
        self.delays, self.asked = delays, dict.fromkeys(delays, 0)
        self._ready: dict[str, tuple[float, Message]] = {}
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return sorted(self.delays)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"{time.monotonic()}-{i}"
            node = message.metadata.dst_node_id
            self.sent.append(message)
            if message.metadata.message_type == "query":
                self.asked[node] += 1
                profile = {"partition-id": node - 1000, "num-partitions": len(self.delays)}
                reply = profile_reply(message, profile)
                reply.metadata.__dict__["_src_node_id"] = node
                self._ready[message.metadata.message_id] = (time.monotonic() + self.delays[node], reply)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        now = time.monotonic()
        due = [i for i in message_ids if i in self._ready and self._ready[i][0] <= now]
        return [self._ready.pop(i)[1] for i in due]

    create_message = send_and_receive = set_run = run = None  # type: ignore[assignment]


def test_a_round_waits_query_wait_for_a_profile_and_takes_a_later_one_at_the_next_round() -> None:
    grid = _AnsweringSuperLink({1000: 0.02, 1001: 1.0})
    queries = ProfileQueries({}, (1.0, 0.5), wait=0.2, timeout=60.0)
    queries.ask(grid, [1000, 1001], server_round=1)
    start = time.monotonic()
    assert list(queries.answers(grid)) == [1000]
    assert 0.2 <= time.monotonic() - start < 0.7  # its wait, not the slow node's 1 s
    assert queries.pending == {1001}
    queries.ask(grid, [1001], server_round=2)  # pending: not asked again
    assert grid.asked == {1000: 1, 1001: 1}
    time.sleep(0.9)
    start = time.monotonic()
    assert list(queries.answers(grid)) == [1001] and queries.pending == set()
    assert time.monotonic() - start < 0.1  # its wait was over: the answer that came is taken


def test_an_unanswered_query_is_dropped_after_its_timeout_and_the_node_asked_again() -> None:
    grid = _AnsweringSuperLink({1000: 30.0})
    queries = ProfileQueries({}, (1.0,), wait=None, timeout=0.1)
    queries.ask(grid, [1000], server_round=1)
    assert queries.answers(grid) == {} and queries.pending == set()
    queries.ask(grid, [1000], server_round=2)
    assert grid.asked == {1000: 2}


def test_a_deadline_round_starts_without_a_slow_profile_and_trains_the_node_after() -> None:
    """query-wait='deadline' (round-deadline 0.2 s, resource-adaptive): round 1 trains the node
    that answered in time; the slow node's answer (1 s) comes during round 1, and it trains in round 2."""
    strategy = built_in_strategy(SMALL_DIGITS_TASK.layers, ratio_levels=(1.0,), round_deadline=0.2,
                                 min_available_nodes=2)
    grid = _AnsweringSuperLink({1000: 0.02, 1001: 1.0})
    arrays = pack(initial_model(SMALL_DIGITS_TASK))
    start = time.monotonic()
    first = strategy.configure_train(1, arrays, ConfigRecord(), grid)
    assert [m.metadata.dst_node_id for m in first] == [1000] and time.monotonic() - start < 0.7
    time.sleep(1.0)  # round 1's train time
    second = strategy.configure_train(2, arrays, ConfigRecord(), grid)
    assert [m.metadata.dst_node_id for m in second] == [1000, 1001]
    assert grid.asked == {1000: 1, 1001: 1}


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
    grid = _AnsweringSuperLink({1000: 0.0})
    ProfileQueries({"task": "x"}, (1.0,), wait=0.1, timeout=1.0).ask(grid, [1000, 1000], server_round=4)
    (query,) = grid.sent  # one per node
    assert dict(query.content[CONFIG]) == {"task": "x", "server-round": 4}
    assert query.metadata.message_type == "query" and query.metadata.group_id == "profile-4"
