"""The channel groups of a network by a torch.fx analysis of our own, beside Torch-Pruning's.

The alternative to the library that ``tasks/graph.py`` uses: trace the network with
``torch.fx.symbolic_trace`` and join channel spaces with a union-find, by rules per operation:
a convolution or linear layer starts a new space (a depthwise convolution keeps its input's), a
normalization, activation, pooling, dropout or flatten keeps its input's, an elementwise add or
multiply joins its inputs' (a residual add, a squeeze-excitation gate). Everything else (concat,
attention, parameters used directly, reshapes) is *unsupported*: the analysis would need one more
rule per operation, and the index bookkeeping on top (flatten expansion, concat offsets, the
q/k/v rows of an attention projection) that the library already has.

For the four networks of ``tests/test_any_network.py``: whether fx traces them, the groups it
finds, the groups of Torch-Pruning (``tasks.graph``), and the operations without a rule.

    python -m benchmarks.fx_groups
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from benchmarks.common import benchmark_parser, write_table
from tests.networks import BACKBONES, task

KEEPS = (nn.BatchNorm2d, nn.LayerNorm, nn.ReLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.MaxPool2d,
         nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity, nn.Flatten)
KEEP_FUNCTIONS = ("relu", "flatten", "layer_norm", "dropout", "adaptive_avg_pool2d", "hardsigmoid")
JOINS = ("add", "mul", "iadd")


def fx_groups(model: nn.Module, example: torch.Tensor) -> tuple[int, list[str]]:
    """(prunable groups, operations without a rule) of ``model`` by the fx analysis."""
    graph = fx.symbolic_trace(model, concrete_args={"features_only": False})
    ShapeProp(graph).propagate(example)
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    space: dict[fx.Node, int] = {}
    roots, unsupported, fresh = [], set(), itertools.count(1000)
    modules = dict(graph.named_modules())
    for node in graph.graph.nodes:
        inputs = [space[a] for a in node.all_input_nodes if a in space]
        if node.op == "placeholder":
            space[node] = -1  # the input's channels are never pruned
        elif node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            layer = modules[node.target]
            depthwise = isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels > 1
            space[node] = inputs[0] if depthwise else next(fresh)
            roots.append(space[node])
        elif (node.op == "call_module" and isinstance(modules[node.target], KEEPS)) or (
                node.op in ("call_function", "call_method") and getattr(node.target, "__name__", node.target)
                in KEEP_FUNCTIONS):
            space[node] = inputs[0] if inputs else -1
        elif node.op in ("call_function", "call_method") and getattr(node.target, "__name__", "") in JOINS:
            for other in inputs[1:]:
                parent[find(other)] = find(inputs[0])
            space[node] = inputs[0] if inputs else -1
        elif node.op != "output" and "tensor_meta" in node.meta:  # shapes and asserts carry no channels
            name = (type(modules[node.target]).__name__ if node.op == "call_module"
                    else getattr(node.target, "__name__", str(node.target)))
            unsupported.add(f"{node.op}:{name}")
    output = next(iter(graph.graph.nodes.__reversed__())).all_input_nodes
    excluded = {find(space[n]) for n in output if n in space}
    return len({find(r) for r in roots} - excluded - {find(-1)}), sorted(unsupported)


def main() -> None:
    args = benchmark_parser(__doc__, quick=None).parse_args()
    rows: list[dict[str, Any]] = []
    for name in BACKBONES:
        net = task(name)
        library = len(net.structure.groups)
        try:
            groups, unsupported = fx_groups(net.full_model().eval(), net.example())
            traced = "yes"
        except Exception as err:  # noqa: BLE001 - report why fx cannot trace it
            groups, unsupported, traced = None, [], f"no: {type(err).__name__}: {str(err)[:80]}"
        rows.append({"network": name, "torch-pruning-groups": library,
                     "fx-traces": traced, "fx-groups": groups, "fx-ops-without-rule": " ".join(unsupported)})
    write_table(args.out, "fx-groups", rows, {"command": "python -m benchmarks.fx_groups"})


if __name__ == "__main__":
    main()
