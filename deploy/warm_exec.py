"""A SuperExec whose ClientApp processes start warm: each message's process is a fork of one that
has already imported the app's heavy dependencies, not a new interpreter.

    flower-supernode --insecure --superlink 127.0.0.1:9092 --isolation process --port 9094 &
    python -m deploy.warm_exec --runtime-api-address 127.0.0.1:9094 --insecure

Flower 1.42's SuperNode runs every message in a new ``flwr-clientapp`` process, which its SuperExec
starts with ``subprocess.Popen``: importing torch and the app cost 2.3 s of CPU on our reference
core before any work, 23 s on a device at a tenth of it, per message. This module is Flower's
SuperExec (``flwr.supercore.superexec.run_superexec``, its task polling, its Runtime API client),
with one change: a ClientApp task is run by ``flwr.supernode.runtime.run_clientapp`` in a forked
child of this process, which imported ``--preload`` once at start. Each message still gets a
process of its own, as under Flower's executor: a crash or a leak ends with it, and the app's own
modules are imported fresh from the run's FAB. Other task types go to Flower's executor unchanged.

``--preload`` (comma-separated modules) defaults to the third-party packages the app imports.
Naming the app's own modules (``client_app.app``) saves about 0.2 s of CPU more a message but
pins them: Flower's ``load_app`` reuses a module already imported, so the FAB's copy would not run.
Start it under the SuperNode's limits (``python -m deploy.throttle ... -- python -m
deploy.warm_exec ...``) so that what a message costs is charged to the device. Linux and macOS
(``os.fork``); it relies on SuperExec internals of Flower 1.42 and says so where they differ.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from rabo_protocol import flwr_compat

__all__ = ["DEFAULT_PRELOAD", "READY", "forking_executor", "main", "preload"]

READY = "Warm SuperExec: preloaded"
"""The start of the line logged once the preloads are imported and tasks are taken."""

DEFAULT_PRELOAD = ("torch", "torch._dynamo", "torch.profiler", "torch.utils.flop_counter", "torch_pruning",
                   "numpy", "pydantic", "zoneinfo", "psutil", "flwr.app", "flwr.clientapp")
"""The app's third-party imports (what ``python -X importtime -c 'import client_app.app'`` shows
costs most: torch 1.4 s of 2.3 s)."""


def preload(modules: Sequence[str]) -> None:
    """Import ``modules`` now; a missing one is one clear error naming it."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise SystemExit(f"--preload: cannot import {name!r} ({err})") from err


def _flower_internals() -> tuple[Any, Any, Any, Any]:
    """(the SuperExec module, its subprocess executor, the ClientApp task type, the launch result
    class): Flower's names this module builds on (``rabo_protocol.flwr_compat``), or one error
    saying which is missing."""
    try:
        module = sys.modules[flwr_compat.resolve("run_superexec").__module__]
        internals = (flwr_compat.resolve("SubprocessExecutor"), flwr_compat.resolve("TaskType").CLIENT_APP,
                     flwr_compat.resolve("LaunchResult"))
    except (ImportError, AttributeError) as err:
        raise SystemExit(f"deploy.warm_exec needs Flower 1.42's SuperExec ({err}); use the SuperNode's "
                         "default --isolation subprocess instead") from err
    if not hasattr(module, "get_executor"):
        raise SystemExit("deploy.warm_exec: this Flower's SuperExec has no get_executor; use the "
                         "SuperNode's default --isolation subprocess instead")
    return (module, *internals)


def _reap() -> None:
    """Collect the children that have exited (no zombies between messages)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def forking_executor() -> Any:
    """Flower's subprocess executor, whose ClientApp tasks run in forks of the calling process."""
    _, subprocess_executor, clientapp, launch_result = _flower_internals()

    class ForkingExecutor(subprocess_executor):  # type: ignore[misc, valid-type]
        """A ClientApp task (without TLS) in a fork; anything else as Flower's executor does it."""

        def launch(self, spec: Any) -> Any:
            if spec.task_type != clientapp or spec.root_certificates_path is not None:
                return super().launch(spec)
            _reap()
            pid = os.fork()
            if pid:
                return launch_result.accepted()
            _run_child(spec)  # never returns
            return None  # pragma: no cover

        def reconcile(self) -> None:
            _reap()

    return ForkingExecutor()


def _run_child(spec: Any) -> None:
    """In the fork: what ``flwr-clientapp --token <t>`` does, then exit with its status."""
    run_clientapp = flwr_compat.resolve("run_clientapp")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    sys.argv = ["flwr-clientapp", "--runtime-api-address", spec.runtime_api_address]
    code = 0
    try:
        if spec.suppress_output:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        run_clientapp(runtime_api_address=spec.runtime_api_address, token=spec.token,
                      insecure=spec.insecure, parent_pid=spec.parent_pid,
                      runtime_dependency_install=spec.runtime_dependency_install)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child reports and exits; it must never return
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime-api-address", required=True,
                        help="the SuperNode's Runtime API (host:port; the SuperNode's --port)")
    parser.add_argument("--insecure", action="store_true", help="no TLS to the Runtime API")
    parser.add_argument("--root-certificates", default=None,
                        help="CA certificate of the Runtime API (its tasks then start cold, as Flower's)")
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD),
                        help="comma-separated modules imported once, before any message")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    args = parser.parse_args(argv)
    if not args.insecure and args.root_certificates is None:
        parser.error("give --insecure or --root-certificates")
    module, *_ = _flower_internals()
    start = time.process_time()
    modules = [m.strip() for m in args.preload.split(",") if m.strip()]
    preload(modules)
    logging.getLogger("flwr").info("%s %d modules in %.2f CPU-seconds; serving %s", READY, len(modules),
                                   time.process_time() - start, args.runtime_api_address)
    executor = forking_executor()
    module.get_executor = lambda *_args, **_kwargs: executor
    module.run_superexec(runtime_api_address=args.runtime_api_address, insecure=args.insecure,
                         root_certificates_path=args.root_certificates, parent_pid=args.parent_pid)


if __name__ == "__main__":
    main()
