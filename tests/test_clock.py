"""Time budgets (client_app/timing.py), the round deadline and late replies (server_app/metering.py,
rabo_strategy/clock.py), the virtual clock (rabo_protocol/clock.py) on hand-built rounds."""

from __future__ import annotations

import doctest
import json
import time
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from client_app import timing
from client_app.app import app as client_app
from client_app.app import local_data
from client_app.budget import probe_round
from client_app.local import round_steps
from client_app.timing import RoundTimer, profile_timer
from rabo_protocol import ConfigError, RunConfig, parse_node_config, parse_run_config
from rabo_protocol import clock as shared_clock
from rabo_protocol.clock import DeviceClass, load_device_classes, round_seconds
from rabo_protocol.wire import METRICS, message_bytes, pack, unpack
from rabo_strategy.clock import RoundClock
from rabo_strategy.profiles import NodeProfile
from server_app.app import run
from server_app.inprocess import InProcessGrid
from server_app.loop import run_rounds
from server_app.metering import POLL_SECONDS, MeteredGrid
from tasks import make_task
from tests.fakes import (
    FAST_CONFIG,
    SMALL_DIGITS_TASK,
    DelayedSuperLink,
    built_in_strategy,
    fake_client,
    initial_model,
    train_reply,
)

DEVICES = """
[fast]
gflops = 2.0
down-mbps = 8.0
up-mbps = 4.0
[slow]
gflops = 0.5
step-ms = 10.0
down-mbps = 1.0
up-mbps = 1.0
"""


def test_the_clock_modules_docstring_examples_run() -> None:
    for module in (shared_clock, timing):
        assert doctest.testmod(module).failed == 0


def test_a_device_file_gives_speeds_and_a_bad_one_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "devices.toml").write_text(DEVICES)
    devices = load_device_classes(tmp_path / "devices.toml")
    assert devices["fast"].step_ms == 0.0 and devices["slow"].step_ms == 10.0
    (tmp_path / "polled.toml").write_text("[node]\ngflops = 1\ndown-mbps = 8\nup-mbps = 8\npoll-s = 3\n")
    polled = load_device_classes(tmp_path / "polled.toml")["node"]  # 1 s of compute, 1 + 1 s of bytes
    assert polled.seconds(flops=1e9, steps=0, bytes_down=10**6, bytes_up=10**6) == pytest.approx(6.0)
    (tmp_path / "bad.toml").write_text("[phone]\ngflops = -1\ndown-mbps = 1\nup-mbps = 1\n")
    with pytest.raises(ValueError, match=r"bad.toml \[phone\]: 'gflops' must be a positive number, got -1"):
        load_device_classes(tmp_path / "bad.toml")
    assert set(load_device_classes()) == {"phone", "single-board-computer", "laptop"}


@pytest.mark.parametrize(("keys", "says"), [
    ({"capacity": "deadline"}, "capacity='deadline' sizes each node to meet round-deadline"),
    ({"device-classes": "laptop, toaster"}, "device-classes names 'toaster': allowed phone, "
                                            "single-board-computer, laptop (device-profiles)"),
    ({"device-classes": "laptop", "device-profiles": "/nowhere.toml"}, "device-profiles='/nowhere.toml'"),
])
def test_time_keys_are_checked_at_the_boundary(keys: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_run_config(keys)


def test_the_deadline_closes_only_resource_adaptive_rounds() -> None:
    cfg = parse_run_config({"round-deadline": 5.0, "deadline-grace": 1.5})
    assert cfg.closes_at("resource-adaptive") == 6.5 and cfg.train_timeout("resource-adaptive") == 6.5
    assert cfg.closes_at("full-model") is None and cfg.train_timeout("full-model") == cfg.round_timeout
    assert cfg.closes_at(None) is None  # a plug-in strategy
    virtual = parse_run_config({"round-deadline": 5.0, "device-classes": "laptop"})
    assert virtual.closes_at("resource-adaptive") == 7.0
    assert virtual.train_timeout("resource-adaptive") == virtual.round_timeout  # lateness is virtual


def test_a_node_takes_the_largest_level_its_throughput_finishes_by_the_deadline() -> None:
    """A fake device of 1 GFLOP/s: the timer's base is the probe's counted GFLOPs per round, and
    the node picks 1/2 for a deadline between the 1/2 and the full model's predictions."""
    cfg = parse_run_config({**FAST_CONFIG, "profile": True})
    task = make_task(cfg.task, cfg.data_spec(4), cfg.mu)
    data = local_data(cfg, parse_node_config({"partition-id": 0, "num-partitions": 4}), ConfigRecord())
    timer = profile_timer(task, data, cfg, DeviceClass("fake", gflops=1.0, down_mbps=1.0, up_mbps=1.0))
    probe = probe_round(task, data, cfg, 0.125, profile=True, one_outer_step=True)  # one outer step
    assert timer.base[-1] == pytest.approx(cfg.outer_steps * float(probe["flops"]) / 1e9)
    assert timer.levels == (1.0, 0.5, 0.25, 0.125)
    assert list(timer.base) == sorted(timer.base, reverse=True)  # smaller submodels, fewer FLOPs
    deadline = (timer.predict(1.0) + timer.predict(0.5)) / 2
    assert timer.pick(deadline) == 0.5 and timer.pick(deadline, cap=0.25) == 0.25
    assert timer.pick(timer.predict(0.125) / 2) == 0.125  # nothing fits: the smallest, and late
    slower = timer.observe(0.5, 5 * timer.predict(0.5))  # factor (1 + 5) / 2
    assert slower.factor == pytest.approx(3.0) and slower.pick(deadline) == 0.25
    assert RoundTimer.from_record(slower.to_record()) == slower


@pytest.mark.parametrize(("keys", "counters"), [({"profile": True, "profile-memory": False}, (True, False)),
                                                ({"profile": False}, (False, False)),
                                                ({"profile": True}, (True, True))])
def test_the_real_clock_times_its_probe_under_the_rounds_own_counters(
        keys: dict, counters: tuple[bool, bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """The round pays the FLOP counter (and the memory profiler) the run asks for: so does the timed
    probe, else the prediction falls short (20 % at ratio 1, 60 % at 1/8 on the default CNN)."""
    timed = []

    def fake_probe(task, data, cfg, ratio, *, profile=False, profile_memory=False, one_outer_step=False):
        timed.append((profile, profile_memory))
        return {"train-seconds": 0.1, "flops": 1e9, "steps": 1}

    monkeypatch.setattr(timing, "probe_round", fake_probe)
    cfg = parse_run_config({**FAST_CONFIG, **keys})
    timer = timing.profile_timer(None, None, cfg, device=None)  # type: ignore[arg-type]
    assert timed == [counters] * (1 + len(cfg.ratio_levels))  # the warm-up, then each level
    assert timer.base == (pytest.approx(0.1 * cfg.outer_steps),) * len(cfg.ratio_levels)


def _slow_node(monkeypatch: pytest.MonkeyPatch, min_share: float) -> tuple[RunConfig, list[float]]:
    """A node whose outer steps take 0.2 + ratio s (a fake probe, which records the levels it
    probes), 3 outer steps a round, a 2.2 s deadline."""
    probed: list[float] = []

    def fake_probe(task, data, cfg, ratio, *, profile=False, profile_memory=False, one_outer_step=False):
        probed.append(ratio)
        return {"train-seconds": 0.2 + ratio}

    monkeypatch.setattr(timing, "probe_round", fake_probe)
    cfg = parse_run_config({**FAST_CONFIG, "outer-steps": 3, "algorithm": "rafbo", "capacity": "deadline",
                            "round-deadline": 2.2, "ratio-levels": "1, 0.5, 0.25, 0.125",
                            "deadline-min-share": min_share})
    return cfg, probed


def test_a_slow_node_probes_up_to_the_first_level_past_the_deadline_and_fits_its_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Outer steps of 0.2 + ratio s, 3 per round, 1 s of startup: 1/8 takes 1 + 0.975 s, 1/4 takes
    1 + 1.35 s. With a 2.2 s deadline the node probes 1/8 and 1/4 only, predicts 1/2 and 1 in
    proportion to 1/4's round, and trains 1/8; with 1.5 s it runs 1 of its 3 outer steps."""
    cfg, probed = _slow_node(monkeypatch, min_share=1.0)
    state = RecordDict()
    assert timing.deadline_ratio(None, None, cfg, None, 1.0, state, startup=1.0) == 0.125  # type: ignore[arg-type]
    assert probed == [0.125, 0.125, 0.25]  # the warm-up, 1/8, 1/4: not 1/2 and 1
    timer = RoundTimer.from_record(state.config_records[timing.STATE_KEY])
    assert timer.base == pytest.approx((1.35 * 4, 1.35 * 2, 1.35, 0.975))
    assert timing.deadline_steps(cfg, state, 0.125) == 3  # 1/8's whole round fits
    tight = cfg.model_copy(update={"round_deadline": 1.5})
    assert timing.deadline_steps(tight, state, 0.125) == 1  # 0.325 s a step: 1 fits in 0.5 s
    assert timing.deadline_steps(tight.model_copy(update={"deadline_steps": "all"}), state, 0.125) is None
    one_step = {"steps": round_steps(tight) // 3}  # a round of 1 of its 3 outer steps, in 0.4 s
    shortened = timing.after_round(tight, None, state, 0.125, one_step, wall_seconds=0.4, startup=1.0)
    assert shortened["step-share"] == pytest.approx(1 / 3)
    assert shortened["predicted-seconds"] == pytest.approx(1.0 + 0.975 / 3)
    learnt = RoundTimer.from_record(state.config_records[timing.STATE_KEY])
    assert learnt.factor == pytest.approx(0.5 + 0.5 * 0.4 * 3 / 0.975)  # as if the whole round took 1.2 s


def test_a_node_trades_steps_for_width_down_to_the_min_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same node, ``deadline-min-share`` 0.5 of 3 outer steps (2 steps, 2/3 of a round): 1/4
    fits (1 + 1.35 x 2/3 = 1.9 s), so does nothing wider (1/2: 1 + 2.1 x 2/3 = 2.4 s), and the
    probe stops there; at 1/4 the node runs the 2 steps that fit in 1.2 s. RABO's one outer step is
    the whole round; ``deadline-steps='all'`` needs the whole round."""
    cfg, probed = _slow_node(monkeypatch, min_share=0.5)
    assert timing.min_share(cfg) == pytest.approx(2 / 3)
    assert timing.min_share(cfg.model_copy(update={"deadline_steps": "all"})) == 1.0
    assert timing.min_share(cfg.model_copy(update={"algorithm": "rabo", "outer_steps": 1})) == 1.0
    state = RecordDict()
    assert timing.deadline_ratio(None, None, cfg, None, 1.0, state, startup=1.0) == 0.25  # type: ignore[arg-type]
    assert probed == [0.125, 0.125, 0.25, 0.5]  # the warm-up, then up to 1/2, the first past
    assert timing.deadline_steps(cfg, state, 0.25) == 2
    two_steps = {"steps": 2 * round_steps(cfg) // 3}  # as predicted: 0.9 s, after 1 s of startup
    assert timing.after_round(cfg, None, state, 0.25, two_steps, 0.9, 1.0)["next-ratio"] == 0.25
    whole = cfg.model_copy(update={"deadline_min_share": 1.0})
    assert timing.after_round(whole, None, state, 0.25, two_steps, 0.9, 1.0)["next-ratio"] == 0.125
    with pytest.raises(ConfigError, match="deadline-min-share"):
        parse_run_config({"deadline-min-share": 0})


def _profile(node: int, ratio: float, device: str | None = None) -> NodeProfile:
    return NodeProfile(node, node - 1000, ratio, "deadline", 4, 100, device)


def test_a_node_counts_the_time_since_the_server_sent_and_skips_a_closed_round() -> None:
    """Half the grace is the SuperNode's wait before the handler: 3 s since the send, grace 2 s,
    count 2 s; a late message's steps fit what is left, and one whose first step cannot is skipped."""
    cfg = parse_run_config({"capacity": "deadline", "round-deadline": 10.0, "deadline-grace": 2.0,
                            "outer-steps": 4, "algorithm": "rafbo", "ratio-levels": "1, 0.5"})
    sent = time.time() - 3.0
    assert timing.message_lead(cfg, None, sent, startup=0.5) == pytest.approx(2.0, abs=0.5)
    assert timing.message_lead(cfg, None, sent, startup=2.6) == 2.6  # at least the process's start
    virtual = DeviceClass("v", gflops=1.0, down_mbps=1.0, up_mbps=1.0)
    assert timing.message_lead(cfg, virtual, sent, 0.5) is None
    assert timing.message_lead(cfg.model_copy(update={"deadline_steps": "all"}), None, sent, 0.5) is None
    assert timing.message_lead(cfg, None, time.time() + 60, 0.5) is None  # the clocks disagree
    state = RecordDict({timing.STATE_KEY: RoundTimer((1.0, 0.5), (16.0, 8.0), startup=1.0).to_record()})
    assert timing.deadline_steps(cfg, state, 0.5) == 4  # 1 + 8 s fits in 10
    assert timing.deadline_steps(cfg, state, 0.5, lead=6.0) == 2  # 2 s a step, 4 s left
    assert timing.deadline_steps(cfg, state, 0.5, lead=7.5) == 1  # ends at 9.5 s, within the deadline
    with pytest.raises(ValueError, match="past round-deadline = 10 s: the node skips it"):
        timing.deadline_steps(cfg, state, 0.5, lead=8.5)  # one step would end at 10.5 s


def test_a_deadline_sized_node_follows_its_next_ratio_and_steps_down_when_late() -> None:
    clock = RoundClock(parse_run_config({"round-deadline": 1.0, "capacity": "deadline"}), "resource-adaptive")
    profiles = {1000: _profile(1000, 0.5), 1001: _profile(1001, 0.5), 1002: _profile(1002, 0.25)}
    clock.resize(profiles, {1000: {"next-ratio": 1.0}, 1001: {"next-ratio": 0.3}}, {1002})
    assert [profiles[n].ratio for n in (1000, 1001, 1002)] == [1.0, 0.5, 0.125]  # 0.3: not a level


def _round(tmp_path: Path, deadline: float) -> tuple[RoundClock, list[Message], list[Message]]:
    (tmp_path / "devices.toml").write_text(DEVICES)
    cfg = parse_run_config({"round-deadline": deadline, "deadline-grace": 0.5, "device-classes": "fast, slow",
                            "device-profiles": str(tmp_path / "devices.toml")})
    clock = RoundClock(cfg, "resource-adaptive")
    parts = initial_model(SMALL_DIGITS_TASK)
    sent = [Message(RecordDict({"arrays": pack(parts)}), dst_node_id=n, message_type="train") for n in (1, 2)]
    for message in sent:
        message.metadata.__dict__["_message_id"] = f"m{message.metadata.dst_node_id}"
    replies = [Message(RecordDict({METRICS: MetricRecord({"flops": 4e9, "steps": 30, "num-examples": 5})}),
                       reply_to=m)
               for m in sent]
    return clock, sent, replies


def test_the_virtual_clock_charges_compute_and_transfer_of_each_reply(tmp_path: Path) -> None:
    clock, sent, replies = _round(tmp_path, deadline=100.0)
    clock.sent(sent)
    profiles = {1: NodeProfile(1, 0, 1.0, "x", device_class="fast"), 2: NodeProfile(2, 1, 1.0, "x",
                                                                                    device_class="slow")}
    assert [clock.late(profiles[r.metadata.src_node_id], r) for r in replies] == [None, None]
    down, up = message_bytes(sent[0]), message_bytes(replies[0])
    assert clock.charged[1] == pytest.approx(4e9 / 2e9 + 8 * down / 8e6 + 8 * up / 4e6)
    assert clock.charged[2] == pytest.approx(4e9 / 0.5e9 + 30 * 0.010 + 8 * down / 1e6 + 8 * up / 1e6)
    assert clock.metrics() == {"simulated-seconds": pytest.approx(clock.charged[2])}  # the slowest
    late, _, _ = _round(tmp_path, deadline=5.0)  # closes at 5.5 s: the slow device's 8+ s is late
    late.sent(sent)
    assert late.late(profiles[1], replies[0]) is None
    reason = late.late(profiles[2], replies[1])
    assert reason is not None and reason.startswith("late on the virtual clock") and "5.5 s" in reason
    assert late.metrics() == {"simulated-seconds": 5.5}
    assert round_seconds([2.1, 9.0], 5.5) == 5.5 and round_seconds([2.1, 3.0], 5.5) == 3.0
    failed = Message(Error(code=2, reason="KeyError: 'flops'"), reply_to=sent[0])
    assert late.late(profiles[1], failed) is None  # the reply parser reports the client's reason


def test_the_round_closes_at_its_timeout_and_a_late_reply_is_counted_never_returned() -> None:
    grid = MeteredGrid(DelayedSuperLink({1: 0.05, 2: 0.6}))
    messages = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in (1, 2)]
    start = time.monotonic()
    replies = list(grid.send_and_receive(messages, timeout=0.3))
    waited = time.monotonic() - start
    assert [r.metadata.src_node_id for r in replies] == [1]
    assert 0.3 - POLL_SECONDS < waited < 0.3 + POLL_SECONDS  # at its timeout, not 3 s later (Flower's poll)
    time.sleep(0.4)  # node 2's reply arrives now, after its round closed
    again = [Message(RecordDict(), dst_node_id=1, message_type="train")]
    assert [r.metadata.src_node_id for r in grid.send_and_receive(again, timeout=0.3)] == [1]
    assert grid.take_late() == 1 and grid.take_late() == 0


def test_a_pull_still_fetching_a_reply_at_the_timeout_is_cut_off_and_its_reply_is_late() -> None:
    grid = MeteredGrid(DelayedSuperLink({1: 0.05, 2: 0.15}, uploads={2: 0.5}))
    messages = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in (1, 2)]
    start = time.monotonic()
    replies = list(grid.send_and_receive(messages, timeout=0.3))
    assert time.monotonic() - start < 0.3 + POLL_SECONDS  # not when node 2's upload ends (0.65 s)
    assert [r.metadata.src_node_id for r in replies] == [1]
    assert grid.take_late() == 0  # still uploading: neither a reply of this round nor lost
    time.sleep(0.5)
    assert grid.take_late() == 1 and grid.take_late() == 0


def test_a_reply_still_uploading_does_not_hold_up_one_that_arrived() -> None:
    """One pull per reply: node 2's upload (1 s) keeps only node 2's reply from the round."""
    grid = MeteredGrid(DelayedSuperLink({1: 0.05, 2: 0.02}, uploads={2: 1.0}))
    messages = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in (1, 2)]
    assert [r.metadata.src_node_id for r in grid.send_and_receive(messages, timeout=0.4)] == [1]
    time.sleep(1.0)
    assert grid.take_late() == 1


def test_a_slow_node_misses_the_deadline_and_its_reply_is_never_applied() -> None:
    """In-process: node 2 takes 0.5 s, the round closes at 0.2 + 0.1 s; its replies are late in
    every round, counted as late replies, and never reach the strategy's aggregation."""
    def train(msg: Message, pid: int) -> Message:
        time.sleep(0.5 if pid == 2 else 0.0)
        trained = {p: {k: a + 0.01 for k, a in d.items()} for p, d in unpack(msg.content["arrays"]).items()}
        return train_reply(msg, trained, {"num-examples": 5})

    app = fake_client(lambda pid: {"partition-id": pid}, train)
    strategy = built_in_strategy(SMALL_DIGITS_TASK.layers, ratio_levels=(1.0,), round_deadline=0.2,
                                 deadline_grace=0.1, min_available_nodes=1)
    seen: list[int] = []
    aggregate = strategy.aggregate_train
    strategy.aggregate_train = lambda rnd, replies: aggregate(  # type: ignore[method-assign]
        rnd, [seen.append(r.metadata.src_node_id) or r for r in replies])
    rows: list[dict] = []
    run_rounds(strategy, MeteredGrid(InProcessGrid(app, 3, {})), pack(initial_model(SMALL_DIGITS_TASK)),
               range(1, 4), timeout=60.0, train_timeout=strategy.clock.closes_at,
               evaluate=lambda rnd, arrays: MetricRecord({}),
               on_round_end=lambda rnd, arrays, row, clients: rows.append(row))
    assert strategy.clock.closes_at == pytest.approx(0.3)
    assert 1002 not in seen and sorted(set(seen)) == [1000, 1001]
    assert [r["replies"] for r in rows] == [2, 2, 2] and [r["failed-replies"] for r in rows] == [1, 1, 1]
    assert [r["late-replies"] for r in rows] == [1, 1, 1]  # in-process: pullable as soon as the round ends


def test_a_simulation_on_the_virtual_clock_sizes_nodes_and_drops_stragglers(tmp_path: Path) -> None:
    """Deadline 3 s: the laptop (2.3 s to start a ClientApp process) trains the full model in time;
    the single-board computer needs 28 s to start: it takes the smallest level and is late. With
    profiling off: the virtual clock counts the FLOPs it charges anyway."""
    config = {**FAST_CONFIG, "results-dir": str(tmp_path), "num-server-rounds": 2, "profile": False,
              "capacity": "deadline", "round-deadline": 3.0,
              "device-classes": "laptop, single-board-computer"}
    run_dir = run(InProcessGrid(client_app, 4, config), parse_run_config(config))
    nodes = json.loads((run_dir / "summary.json").read_text())["nodes"]
    assert {n["source"] for n in nodes} == {"deadline"}
    assert [n["device_class"] for n in nodes] == ["laptop", "single-board-computer"] * 2
    assert [n["ratio"] for n in nodes] == [1.0, 0.125, 1.0, 0.125]
    rows = json.loads((run_dir / "metrics.json").read_text())[1:]
    assert [(r["replies"], r["failed-replies"]) for r in rows] == [(2, 2), (2, 2)]
    assert [r["simulated-seconds"] for r in rows] == [5.0, 5.0]  # closed at deadline + grace
