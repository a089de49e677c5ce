"""The unit groups of any network, derived from the network itself.

Torch-Pruning's ``DependencyGraph`` (traced from an example input) knows which channels are coupled:
the two branches of a residual add, a convolution and the BatchNorm after it (parameters and
running statistics), depthwise and grouped convolutions, squeeze-excitation gates, the embedding
dimension that every LayerNorm, attention projection and MLP of a transformer shares, flattening
(one channel feeds H*W inputs of the next layer). Each of its groups is one of our unit groups,
its units the output channels of the group's root layer; the groups that would change the
network's output (the classifier's classes) are not pruned.

From that graph, :func:`derive_structure` learns where every tensor (parameter and floating-point
buffer) reads each unit by *tagging*: every coordinate of a float64 copy holds its own index, the
copy is pruned by the library a few times (each time every group drops the units whose code
``unit * G + group + 1`` has bit b set), and the tags that survive say, for every coordinate of
every dim, which group and unit it belongs to. The result is checked: a copy pruned by the library
to a random choice of units must equal, tensor by tensor, the template sliced by the derived
indices, and must run forward to the same output shape; any mismatch, or an operation the library
cannot trace, raises :class:`UnsupportedNetwork` naming the module (never a silently wrong submodel).

The library is pinned (``torch-pruning>=1.6,<1.7``) for its graph and its pruning functions; the
index bookkeeping is ours (docs/results.md, section 8, compares it with a torch.fx analysis).
"""

from __future__ import annotations

import copy
import gc
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch_pruning as tp
from torch import Tensor, nn

from .base import LayerSpec, Role
from .structure import Block, Dims, UnitGroup

Layout = tuple[tuple[np.ndarray, np.ndarray] | None, ...]
"""Per dim of a tensor: (group position per coordinate, -1 for none; unit per coordinate), or None."""


class UnsupportedNetwork(ValueError):
    """The network has an operation the dependency analysis cannot prune correctly."""


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    buffers = {k: b for k, b in model.named_buffers() if b.is_floating_point()}
    return {**dict(model.named_parameters()), **buffers}


def _graph(model: nn.Module, example: Tensor) -> tp.DependencyGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about parameters it wraps itself
        try:
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
        except Exception as err:  # noqa: BLE001 - any tracing failure is the network's
            raise UnsupportedNetwork(f"cannot trace {type(model).__name__} for channel dependencies: "
                                     f"{type(err).__name__}: {err}") from err


def _groups(model: nn.Module, example: Tensor) -> tuple[tp.DependencyGraph, dict[str, tp.Group]]:
    """The library's graph and its groups by root module name (output layers excluded)."""
    graph = _graph(model, example)
    outputs = [node.module for node in graph.module2node.values()
               if not node.outputs and isinstance(node.module, nn.Module)]
    groups = {}
    for group in graph.get_all_groups(ignored_layers=outputs):
        root = group[0].dep.target.module
        if len(group[0].idxs) > 1 and root in graph._module2name:
            groups[graph._module2name[root]] = group
    return graph, groups


def _sync_widths(model: nn.Module, before: Mapping[str, tuple[int, ...]]) -> None:
    """Integer attributes that hold a pruned width (torchvision's ``VisionTransformer.hidden_dim``,
    read by its forward) follow it: a module whose own tensor shrank from W to k along a dim has
    its attributes equal to W set to k. The library updates the layers it knows itself."""
    after = {k: tuple(t.shape) for k, t in _tensors(model).items()}
    for name, module in model.named_modules():
        own = [k for k in after if k.rpartition(".")[0] == name and after[k] != before[k]]
        changed = {b: a for k in own for b, a in zip(before[k], after[k], strict=True) if a != b}
        for attr, value in vars(module).items():
            if type(value) is int and value in changed and not attr.startswith("_"):
                setattr(module, attr, changed[value])


def prune(model: nn.Module, example: Tensor, kept: Mapping[str, np.ndarray]) -> nn.Module:
    """``model`` (changed in place and returned) keeping units ``kept[g]`` of each group ``g``."""
    before = {k: tuple(t.shape) for k, t in _tensors(model).items()}
    _, groups = _groups(model, example)
    for name, units in kept.items():
        width = len(groups[name][0].idxs)
        drop = np.setdiff1d(np.arange(width), units)
        if len(drop):
            groups[name].prune([int(u) for u in drop])
    _sync_widths(model, before)
    return model


class GraphStructure:
    """The :class:`~tasks.structure.Structure` of any network (see the module docstring)."""

    def __init__(self, groups: tuple[UnitGroup, ...], layouts: Mapping[str, Layout],
                 roles: Mapping[str, Role], classifier: LayerSpec) -> None:
        self.groups, self.classifier = groups, classifier
        self._layouts, self._roles = dict(layouts), dict(roles)

    def full_widths(self) -> dict[str, int]:
        return {group.name: group.width for group in self.groups}

    def blocks(self) -> tuple[Block, ...]:
        found: set[tuple[str, int | None, int | None]] = set()
        for name, layout in self._layouts.items():
            if name not in self._roles:  # buffers are not trained: no coverage
                continue
            sides = [sorted(set(np.unique(g[g >= 0]).tolist())) for g, _ in filter(None, layout)]
            outs = sides[0] if sides else [None]
            inps = sides[1] if len(sides) > 1 else [None]
            found.update((self._roles[name], o, i) for o in outs for i in inps)
        paired = {(r, g) for r, o, i in found if o is not None and i is not None for g in (o, i)}
        kept = [(r, o, i) for r, o, i in found
                if (o is not None and i is not None) or (r, o if o is not None else i) not in paired]
        return tuple(Block(r, o, i, 1) for r, o, i in sorted(kept, key=str))

    def dims(self, kept: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Dims]:
        member = [np.isin(np.arange(g.width), kept[g.name]) if g.name in kept else np.ones(g.width, bool)
                  for g in self.groups]
        out: dict[str, Dims] = {}
        for name in shapes:
            layout = self._layouts.get(name)
            if layout is None:
                continue
            out[name] = tuple(None if d is None else np.flatnonzero(self._keep(d, member)) for d in layout)
        return out

    @staticmethod
    def _keep(dim: tuple[np.ndarray, np.ndarray], member: list[np.ndarray]) -> np.ndarray:
        group, unit = dim
        keep = group < 0
        for g in np.unique(group[group >= 0]):
            mine = group == g
            keep[mine] = member[g][unit[mine]]
        return keep

    def unit_energy(self, group: int, params: Mapping[str, np.ndarray]) -> np.ndarray:
        energy = np.zeros(self.groups[group].width)
        for name, layout in self._layouts.items():
            if name not in params:
                continue
            squares = np.square(params[name].astype(np.float64))
            for axis, d in enumerate(layout):
                if d is not None and np.any(mine := d[0] == group):
                    per_coord = squares.sum(axis=tuple(a for a in range(squares.ndim) if a != axis))
                    energy += np.bincount(d[1][mine], weights=per_coord[mine], minlength=len(energy))
        return energy


def derive_structure(model: nn.Module, example: Tensor, role: Callable[[str], Role],
                     classifier: LayerSpec, checks: int = 2) -> GraphStructure:
    """The structure of ``model`` traced on ``example``; ``role(name)`` is each parameter's role.

    ``checks`` random submodels are pruned by the library and compared with the derived slices.
    """
    # tags are exact integers: float32 holds them up to 2^24 (every tensor of a ResNet-50), float64
    # beyond; the template and its pruned copies are the memory of the analysis
    dtype = torch.float32 if max(t.numel() for t in _tensors(model).values()) < 2**24 else torch.float64
    template = copy.deepcopy(model).to(dtype).eval()
    example = example.to(dtype)
    _, live = _groups(template, example)
    names = list(live)
    widths = [len(live[n][0].idxs) for n in names]
    with torch.no_grad():
        for t in _tensors(template).values():
            t.copy_(torch.arange(t.numel(), dtype=dtype).reshape(t.shape))
    shapes = {k: tuple(t.shape) for k, t in _tensors(template).items()}

    def removed(drop: Callable[[int, int], np.ndarray]) -> dict[str, list[np.ndarray]]:
        """Per tensor and dim, the coordinates gone when group g drops units ``drop(g, width)``."""
        kept = {n: np.setdiff1d(np.arange(w), drop(g, w)) for g, (n, w) in enumerate(zip(names, widths,
                                                                                         strict=True))}
        gone = {k: [np.ones(n, dtype=bool) for n in s] for k, s in shapes.items()}
        gc.collect()  # the library's graph of the previous copy holds it in reference cycles
        for name, tensor in _tensors(prune(copy.deepcopy(template), example, kept)).items():
            if tensor.numel():
                flat = tensor.detach().numpy().ravel().astype(np.int64)
                for axis, index in enumerate(np.unravel_index(flat, shapes[name])):
                    gone[name][axis][index] = False
        return gone

    # group id + 1 bit by bit (each group drops one half, then the other, when the bit is set; no
    # group ever drops every unit), then the unit bit by bit (unit 0 is never dropped)
    group_code = {k: [np.zeros(n, np.int64) for n in s] for k, s in shapes.items()}
    unit_code = {k: [np.zeros(n, np.int64) for n in s] for k, s in shapes.items()}
    none = np.array([], dtype=np.int64)
    for bit in range(max(len(names), 1).bit_length()):
        for half in (lambda w: np.arange(w // 2), lambda w: np.arange(w // 2, w)):
            gone = removed(lambda g, w, h=half, b=bit: h(w) if (g + 1) >> b & 1 else none)
            for k, dims in gone.items():
                for axis, d in enumerate(dims):
                    group_code[k][axis] |= d.astype(np.int64) << bit
    for bit in range(max(max(widths, default=1) - 1, 1).bit_length()):
        gone = removed(lambda g, w, b=bit: np.flatnonzero(np.arange(w) >> b & 1))
        for k, dims in gone.items():
            for axis, d in enumerate(dims):
                unit_code[k][axis] |= d.astype(np.int64) << bit
    layouts = {k: tuple(None if not g.any() else (g - 1, u) for g, u in zip(group_code[k], unit_code[k],
                                                                          strict=True))
               for k in shapes}
    roles = {k: role(k) for k, _ in template.named_parameters()}
    groups = tuple(UnitGroup(n, role(f"{n}.weight"), w) for n, w in zip(names, widths, strict=True))
    structure = GraphStructure(groups, layouts, roles, classifier)
    _check(structure, template, example, checks)
    return structure


def _check(structure: GraphStructure, template: nn.Module, example: Tensor, checks: int) -> None:
    """The derived slices equal the library's own pruning on random submodels, which run."""
    rng = np.random.default_rng(0)
    full = {k: t.detach().numpy() for k, t in _tensors(template).items()}
    expected_shape = template(example).shape
    for _ in range(checks):
        kept = {g.name: np.sort(rng.choice(g.width, size=max(1, g.width // 2), replace=False))
                for g in structure.groups}
        pruned = prune(copy.deepcopy(template), example, kept)
        dims = structure.dims(kept, {k: t.shape for k, t in full.items()})
        for name, tensor in _tensors(pruned).items():
            ours = full[name]
            for axis, d in enumerate(dims.get(name, ())):
                ours = ours if d is None else np.take(ours, d, axis=axis)
            if ours.shape != tuple(tensor.shape) or not np.array_equal(ours, tensor.detach().numpy()):
                raise UnsupportedNetwork(f"module '{name.rpartition('.')[0]}' ({name}) is not pruned "
                                         "consistently by the dependency analysis")
        try:
            shape = pruned(example).shape
        except Exception as err:  # noqa: BLE001 - the submodel does not run: say which op
            raise UnsupportedNetwork(f"the pruned network does not run: {type(err).__name__}: {err}") from err
        if shape != expected_shape:
            raise UnsupportedNetwork(f"pruning changes the network's output shape {tuple(expected_shape)} "
                                     f"to {tuple(shape)}")
