"""The ClientApp: answers profile queries and runs local bilevel rounds on its submodel."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from rabo_strategy.wire import ARRAYS, CONFIG, METRICS, PROFILE, pack, unpack, widths_from_config
from server_app.config import parse_run_config
from tasks import client_data, make_task

from .local import local_round

app = ClientApp()


def _partition(context: Context) -> tuple[int, int]:
    """(partition-id, num-partitions) from the node config (simulation or deployment)."""
    try:
        return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    except KeyError as err:
        raise ValueError(
            f"node config lacks {err}: start the SuperNode with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        ) from None


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's partition and declared resource ratio (-1 when not declared)."""
    node_config = context.node_config
    profile = ConfigRecord({
        "partition-id": int(node_config.get("partition-id", -1)),
        "resource-ratio": float(node_config.get("resource-ratio", -1.0)),
    })
    return Message(RecordDict({PROFILE: profile}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Rebuild the submodel at the received widths, run the local solver, return the slices."""
    cfg = parse_run_config(context.run_config)
    partition_id, num_partitions = _partition(context)
    spec = cfg.data_spec(num_partitions)
    task = make_task(cfg.task, spec, cfg.mu)
    config = msg.content[CONFIG]
    reply, metrics = local_round(
        task, client_data(spec, partition_id), cfg, widths_from_config(config),
        unpack(msg.content[ARRAYS]), server_round=int(config["server-round"]),
        partition_id=partition_id,
    )
    metrics["resource-ratio"] = float(config["resource-ratio"])
    content = RecordDict({ARRAYS: pack(reply), METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=msg)
