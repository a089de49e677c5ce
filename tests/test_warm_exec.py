"""deploy/warm_exec.py: a ClientApp task runs in a fork of the warm process, with the task's token;
other tasks go to Flower's executor; the fork reports its own start to the node's timer; and, end to
end, a SuperNode in process isolation whose only executor is this one serves a whole run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from client_app.timing import startup_seconds
from deploy.warm_exec import forking_executor, preload

_WHY = "deploy.warm_exec builds on Flower 1.42's SuperExec"
TaskType = pytest.importorskip("flwr.supercore.constant", reason=_WHY).TaskType
SubprocessExecutor = pytest.importorskip("flwr.supercore.superexec.executor.subprocess_executor",
                                         reason=_WHY).SubprocessExecutor
_types = pytest.importorskip("flwr.supercore.superexec.executor.types", reason=_WHY)
ExecutionSpec, LaunchResultStatus = _types.ExecutionSpec, _types.LaunchResultStatus
flower_clientapp = pytest.importorskip("flwr.supernode.runtime.run_clientapp", reason=_WHY)

ROOT = Path(__file__).resolve().parents[1]


def _spec(task_type: object, token: str = "ab" * 16) -> object:
    return ExecutionSpec(task_type=task_type, runtime_api_address="127.0.0.1:1", token=token, insecure=True,
                         root_certificates_path=None, runtime_dependency_install=False,
                         parent_pid=os.getpid(), suppress_output=False, task_id=7)


def _wait_for(path: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while not path.is_file() or not path.read_text().endswith("\n"):
        assert time.monotonic() < deadline, f"the fork wrote nothing to {path}"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_a_clientapp_task_runs_in_a_fork_with_its_token(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "child.json"

    def fake_run_clientapp(**kwargs: object) -> None:  # what the fork runs instead of Flower's
        out.write_text(json.dumps({**kwargs, "pid": os.getpid(), "ppid": os.getppid(), "argv0": sys.argv[0],
                                   "startup": startup_seconds(), "again": startup_seconds()}) + "\n")

    monkeypatch.setattr(flower_clientapp, "run_clientapp", fake_run_clientapp)
    time.sleep(max(0.0, 1.5 - (time.time() - psutil.Process().create_time())))  # a warm process 1.5 s old
    result = forking_executor().launch(_spec(TaskType.CLIENT_APP, token="cd" * 16))
    assert result.status == LaunchResultStatus.ACCEPTED
    child = _wait_for(out)
    assert child["ppid"] == os.getpid() != child["pid"]
    assert child["token"] == "cd" * 16
    assert (child["runtime_api_address"], child["insecure"]) == ("127.0.0.1:1", True)
    # the node's timer counts the fork's own start (milliseconds), not the warm process's age, once
    assert child["argv0"] == "flwr-clientapp"
    assert 0.0 <= child["startup"] < 1.0 and child["again"] == 0.0
    assert startup_seconds() == 0.0  # the warm process itself is no message's process


def test_other_tasks_go_to_flowers_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    launched = []
    monkeypatch.setattr(SubprocessExecutor, "launch", lambda self, spec: launched.append(spec) or "flower")
    spec = _spec(TaskType.SERVER_APP)
    assert forking_executor().launch(spec) == "flower"
    assert launched == [spec]


def test_a_missing_preload_is_one_clear_error() -> None:
    with pytest.raises(SystemExit, match="--preload: cannot import 'no_such_module_xyz'"):
        preload(["json", "no_such_module_xyz"])


@pytest.mark.e2e
def test_a_supernode_in_process_isolation_runs_on_the_warm_executor(tmp_path: Path) -> None:
    """No other executor exists for the node: the run completes only if every message ran in a fork."""
    from deploy.flwr_config import set_connection
    from deploy.processes import flwr_json, stop
    from tests.test_deployment import _free_ports

    link, runtime = _free_ports(2)
    home, results = tmp_path / "flwr-home", tmp_path / "results"
    set_connection(home / "config.toml", "warm", f"127.0.0.1:{link}")
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    bin_ = Path(sys.executable).parent
    log = (tmp_path / "processes.log").open("w")
    commands = [[str(bin_ / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(link)],
                [str(bin_ / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                 "--isolation", "process", "--port", str(runtime), "--node-config",
                 "partition-id=0 num-partitions=1"],
                [sys.executable, "-m", "deploy.warm_exec", "--insecure", "--runtime-api-address",
                 f"127.0.0.1:{runtime}"]]
    processes = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                 for command in commands]
    try:
        config = ("num-server-rounds=2 dataset='sklearn-digits' inner-steps=2 v-steps=2 outer-steps=1 "
                  "profile=false min-available-nodes=1 "
                  f"results-dir='{results}'")
        deadline = time.monotonic() + 60
        while True:  # the SuperLink takes a moment to listen
            try:
                run_id = flwr_json(env, "run", ".", "warm", "--run-config", config, cwd=ROOT)["run-id"]
                break
            except (RuntimeError, subprocess.CalledProcessError):
                assert time.monotonic() < deadline, (tmp_path / "processes.log").read_text()[-3000:]
                time.sleep(1)
        deadline = time.monotonic() + 300
        while not (run := flwr_json(env, "list", "warm", "--run-id", str(run_id), cwd=ROOT)["runs"][0])[
                "status"].startswith("finished"):
            assert time.monotonic() < deadline, (tmp_path / "processes.log").read_text()[-3000:]
            time.sleep(2)
        assert run["status"] == "finished:completed", (tmp_path / "processes.log").read_text()[-3000:]
        (run_dir,) = results.iterdir()
        assert [r["round"] for r in json.loads((run_dir / "metrics.json").read_text())] == [0, 1, 2]
    finally:
        stop(processes)
        log.close()
