"""deploy/throttle.py: limits, detection on fake cgroup trees, the exact files written, the CLI, and, where
cgroups are writable, a real CPU quota and memory limit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from deploy.throttle import CgroupSupport, Limits, Throttle, ThrottleUnavailable, detect, main

ROOT = Path(__file__).resolve().parents[1]
HINT = "(run as root, or delegate a cgroup to this user)"


def _files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _v2(root: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    return _files(root, {"cgroup.controllers": controllers})


def _v1(root: Path, cpu: str = "cpu", cpuacct: str | None = "cpuacct") -> Path:
    files = {f"{cpu}/cpu.cfs_quota_us": "-1", "memory/memory.limit_in_bytes": "9223372036854771712"}
    if cpuacct:
        files[f"{cpuacct}/cpuacct.usage"] = "0"
    return _files(root, files)


def _no_proc(tmp_path: Path) -> Path:
    return tmp_path / "no-such-proc-cgroup"


# ---------------------------------------------------------------- Limits


@pytest.mark.parametrize(("cpu", "memory_mb", "field"), [
    (0, None, "cpu"), (-0.5, None, "cpu"), (0.001, None, "cpu"), (float("nan"), None, "cpu"),
    (True, None, "cpu"), ("0.5", None, "cpu"), (None, 0, "memory_mb"), (None, -1, "memory_mb"),
    (None, float("inf"), "memory_mb"), (0.5, "2048", "memory_mb")])
def test_limits_reject_bad_values_naming_the_field(cpu: object, memory_mb: object, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be a number > 0 \(.*\), got "):
        Limits(cpu, memory_mb)  # type: ignore[arg-type]


def test_limits_accept_fractions_several_cores_and_no_limit() -> None:
    assert Limits(0.25, 2048).cpu == 0.25
    assert Limits(2.0, None).memory_mb is None
    assert Limits() == Limits(None, None)


# ---------------------------------------------------------------- detect() on fake trees


def test_detect_v2(tmp_path: Path) -> None:
    support = detect(_v2(tmp_path))
    assert support.version == 2 and "cgroup v2" in support.reason
    assert support.cpu == support.memory == support.usage == tmp_path / "rabo"


def test_detect_v2_without_the_memory_controller(tmp_path: Path) -> None:
    support = detect(_v2(tmp_path, "cpuset cpu io pids"))
    assert support.version is None
    assert support.reason == f"cgroup v2 found but {tmp_path}/cgroup.controllers lacks memory"


def test_detect_v2_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    support = detect(_v2(tmp_path))
    assert support.version is None
    assert support.reason == f"cgroup v2 found but {tmp_path} is not writable {HINT}"


def test_detect_v1_separate_mounts(tmp_path: Path) -> None:
    support = detect(_v1(tmp_path), _no_proc(tmp_path))
    assert support.version == 1 and support.reason.startswith("cgroup v1")
    assert (support.cpu, support.memory, support.usage) == (
        tmp_path / "cpu" / "rabo", tmp_path / "memory" / "rabo", tmp_path / "cpuacct" / "rabo")


def test_detect_v1_cpu_and_cpuacct_together(tmp_path: Path) -> None:
    support = detect(_v1(tmp_path, "cpu,cpuacct", "cpu,cpuacct"), _no_proc(tmp_path))
    assert support.version == 1 and support.cpu == support.usage == tmp_path / "cpu,cpuacct" / "rabo"


def test_detect_v1_without_cpuacct_reads_no_usage(tmp_path: Path) -> None:
    support = detect(_v1(tmp_path, cpuacct=None), _no_proc(tmp_path))
    assert support.version == 1 and support.usage is None and "not readable" in support.reason
    assert Throttle("n", Limits(0.5), support).create().cpu_seconds() is None


def test_detect_v1_nests_beneath_the_callers_own_group(tmp_path: Path) -> None:
    (_v1(tmp_path) / "memory" / "outer" / "inner").mkdir(parents=True)
    proc = _files(tmp_path, {"proc": "4:memory:/outer/inner\n2:cpuacct:/\n1:cpu:/gone\n0::/\n"}) / "proc"
    support = detect(tmp_path, proc)
    assert support.memory == tmp_path / "memory" / "outer" / "inner" / "rabo"
    assert support.cpu == tmp_path / "cpu" / "rabo"  # /gone does not exist under cpu/: the mount itself


def test_detect_v1_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    support = detect(_v1(tmp_path), _no_proc(tmp_path))
    assert support.version is None
    assert support.reason == f"cgroup v1 found but {tmp_path}/cpu is not writable {HINT}"


def test_detect_v1_without_memory(tmp_path: Path) -> None:
    (_v1(tmp_path) / "memory" / "memory.limit_in_bytes").unlink()
    support = detect(tmp_path, _no_proc(tmp_path))
    assert support.version is None and "cgroup v1 found" in support.reason
    assert "memory.limit_in_bytes" in support.reason


def test_detect_neither(tmp_path: Path) -> None:
    support = detect(tmp_path, _no_proc(tmp_path))
    assert support.version is None
    assert support.reason.startswith(f"no usable cgroup hierarchy under {tmp_path}: neither v2")
    with pytest.raises(ThrottleUnavailable, match="no usable cgroup hierarchy"):
        Throttle("n", Limits(0.5), support)


def test_group_names_stay_inside_the_parent(tmp_path: Path) -> None:
    for bad in ("", "../etc", "a/b", ".hidden", "x" * 65):
        with pytest.raises(ValueError, match="name must be"):
            Throttle(bad, Limits(), detect(_v2(tmp_path)))


# ---------------------------------------------------------------- the files written


def test_v2_writes_cpu_max_memory_max_and_the_parents_subtree_control(tmp_path: Path) -> None:
    _files(_v2(tmp_path), {"cgroup.subtree_control": "cpuset cpu io memory pids"})
    throttle = Throttle("node3", Limits(0.25, 2048), detect(tmp_path)).create()
    group = tmp_path / "rabo" / "node3"
    assert (group / "cpu.max").read_text() == "25000 100000"
    assert (group / "memory.max").read_text() == "2147483648"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "cpuset cpu io memory pids"  # untouched
    assert (tmp_path / "rabo" / "cgroup.subtree_control").read_text() == "+cpu +memory"
    throttle.add(1234)
    assert (group / "cgroup.procs").read_text() == "1234"
    (group / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    assert throttle.cpu_seconds() == 1.5
    assert throttle.dirs == [group]
    Throttle("node3", Limits(2.0, None), detect(tmp_path)).create()  # reuse: several cores, no memory limit
    assert (group / "cpu.max").read_text() == "200000 100000" and (group / "memory.max").read_text() == "max"


def test_v2_enables_the_controllers_in_the_root_too(tmp_path: Path) -> None:
    _files(_v2(tmp_path), {"cgroup.subtree_control": "cpu"})
    Throttle("n", Limits(None, None), detect(tmp_path)).create()
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory"
    assert (tmp_path / "rabo" / "n" / "cpu.max").read_text() == "max 100000"


def test_v1_writes_period_quota_and_memory_limits(tmp_path: Path) -> None:
    _files(_v1(tmp_path), {"memory/rabo/node3/memory.memsw.limit_in_bytes": "-1"})
    throttle = Throttle("node3", Limits(0.25, 2048), detect(tmp_path, _no_proc(tmp_path))).create()
    cpu, memory, acct = (tmp_path / name / "rabo" / "node3" for name in ("cpu", "memory", "cpuacct"))
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "25000"
    assert (memory / "memory.limit_in_bytes").read_text() == "2147483648"
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == "2147483648"  # no swap beyond it
    throttle.add(42)
    assert [(group / "cgroup.procs").read_text() for group in (cpu, memory, acct)] == ["42"] * 3
    (acct / "cpuacct.usage").write_text("2500000000\n")
    assert throttle.cpu_seconds() == 2.5
    Throttle("node3", Limits(), throttle.support).create()
    assert (cpu / "cpu.cfs_quota_us").read_text() == (memory / "memory.limit_in_bytes").read_text() == "-1"


def test_usage_of_a_missing_group_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ThrottleUnavailable, match="no group 'ghost'"):
        Throttle("ghost", Limits(), detect(_v2(tmp_path))).cpu_seconds()


# ---------------------------------------------------------------- the CLI's answers and errors


@pytest.mark.parametrize(("argv", "says"), [
    (["--cpu", "-1", "--", "true"], "throttle: cpu must be a number > 0"),
    (["--memory-mb", "0", "--", "true"], "throttle: memory_mb must be a number > 0"),
    (["--cpu", "abc", "--", "true"], "throttle: argument --cpu: invalid float value"),
    (["--cpu", "0.5"], "throttle: no command: give it after '--'"),
    (["--cpu", "0.5", "true"], "throttle: unrecognized arguments: true"),
    (["--cpu", "0.5", "--", "no-such-command-xyz"], "throttle: command not found: no-such-command-xyz"),
    (["--check", "--remove", "n"], "throttle: argument --remove: not allowed with argument --check"),
])
def test_cli_errors_are_one_line_and_exit_2(argv: list[str], says: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(says) and err.count("\n") == 1


def test_cli_without_cgroups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert capsys.readouterr().out.startswith(f"no usable cgroup hierarchy under {tmp_path}")
    assert main(["--root", str(tmp_path), "--cpu", "0.5", "--", "true"]) == 2
    assert capsys.readouterr().err.startswith("throttle: no usable cgroup hierarchy")


def test_cli_check_and_usage_on_a_fake_v2_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(_v2(tmp_path)), "--check"]) == 0
    assert capsys.readouterr().out.startswith("cgroup v2")
    _files(tmp_path, {"rabo/node3/cpu.stat": "usage_usec 1500000\n"})
    assert main(["--root", str(tmp_path), "--usage", "node3"]) == 0
    assert capsys.readouterr().out == "1.500000\n"


def test_cli_error_has_no_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "deploy.throttle", "--cpu", "0", "--", "true"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# ---------------------------------------------------------------- for real (writable cgroups only)

SUPPORT: CgroupSupport = detect()
real = pytest.mark.skipif(SUPPORT.version is None, reason=SUPPORT.reason)
BUSY = ("import time\nt, c = time.time(), time.process_time()\nwhile time.time() - t < 1.5:\n    pass\n"
        "print(time.process_time() - c, time.time() - t)")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.throttle", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


@real
def test_a_quarter_core_is_a_quarter_core() -> None:
    """A busy loop of 1.5 s wall under --cpu 0.25 gets about 0.25 of a core, by its own clock and by
    the group's CPU-seconds; --usage reads them and --remove deletes the group."""
    name = f"pytest-{uuid.uuid4().hex[:8]}"
    try:
        start = time.monotonic()
        done = _cli("--cpu", "0.25", "--memory-mb", "512", "--name", name, "--", sys.executable, "-c", BUSY)
        wall = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        cpu, loop_wall = map(float, done.stdout.split())
        assert 0.15 < cpu / loop_wall < 0.35, (cpu, loop_wall)
        used = Throttle(name, support=SUPPORT).cpu_seconds()
        if used is not None:  # the whole group, interpreter start included
            assert cpu <= used and 0.15 < used / wall < 0.35, (used, wall)
            assert abs(float(_cli("--usage", name).stdout) - used) < 1e-6
    finally:
        removed = _cli("--remove", name)
    assert removed.returncode == 0, removed.stderr
    assert not any(group.exists() for group in Throttle(name, support=SUPPORT).dirs)


@real
def test_the_memory_limit_kills_what_exceeds_it() -> None:
    name = f"pytest-{uuid.uuid4().hex[:8]}"
    grab = "b = b'x' * ({} * 2**20)"
    try:
        small = _cli("--memory-mb", "64", "--name", name, "--", sys.executable, "-c", grab.format(16))
        large = _cli("--memory-mb", "64", "--name", name, "--", sys.executable, "-c", grab.format(256))
    finally:
        Throttle(name, support=SUPPORT).remove()
    assert small.returncode == 0, small.stderr
    assert large.returncode == -9, (large.returncode, large.stderr)  # the OOM killer's SIGKILL
