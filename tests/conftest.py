"""Shared fixtures (plain helpers and fakes are in tests/fakes.py)."""

from __future__ import annotations

import pytest

from rabo_protocol.flwr_compat import TaskIdentity


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages built outside a running app need the identity of the sending task."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
