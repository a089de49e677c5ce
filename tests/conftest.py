"""Shared fixtures: small configs and a TaskIdentity for building Messages outside an app."""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages built outside a running app need the identity of the sending task."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


FAST_CONFIG = {
    "dataset": "sklearn-digits",
    "num-server-rounds": 3,
    "inner-steps": 3,
    "v-steps": 3,
    "outer-steps": 2,
    "batch-size": 32,
    "profile": False,
}
