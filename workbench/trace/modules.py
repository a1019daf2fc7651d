"""Forward-hook tracer for any ``nn.Module``: call order, shapes, host/CUDA time, call stacks.

Hooks are per-module ``register_forward_pre_hook``/``register_forward_hook`` (``always_call=True`` so an
exception can't leave the call stack unbalanced). They run in Python, so they see nothing inside CUDA
graph replays or compiled graphs: trace vLLM with ``enforce_eager=True``.
"""

from __future__ import annotations

import importlib
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from workbench.trace.records import LayerInfo, ModuleCall, ModuleStat, OperatorCount


def shape_tree(obj: Any, depth: int = 0) -> Any:
    """Shapes of the tensors in ``obj`` (nested lists for tuples/lists, dicts for dicts, None otherwise)."""
    if isinstance(obj, torch.Tensor):
        return list(obj.shape)
    if depth > 3:
        return None
    if isinstance(obj, list | tuple):
        return [shape_tree(x, depth + 1) for x in obj[:16]]
    if isinstance(obj, dict):
        return {str(k): shape_tree(v, depth + 1) for k, v in list(obj.items())[:16]}
    if hasattr(obj, "last_hidden_state") or hasattr(obj, "logits"):  # HF ModelOutput (an OrderedDict)
        try:
            return {str(k): shape_tree(v, depth + 1) for k, v in obj.items()}
        except AttributeError:
            return None
    return None


class ModuleTracer:
    """Record every forward call of ``root``'s submodules while the tracer is entered.

    ``cuda_timing=True`` also brackets each call with CUDA events (costly; the GPU time of a call).
    """

    def __init__(self, root: nn.Module, cuda_timing: bool = False, record_shapes: bool = True) -> None:
        self.root = root
        self.cuda_timing = cuda_timing and torch.cuda.is_available()
        self.record_shapes = record_shapes
        self.calls: list[ModuleCall] = []
        self._paths: dict[int, list[str]] = defaultdict(list)
        for name, module in root.named_modules(remove_duplicate=False):
            self._paths[id(module)].append(name)
        self._stack: list[tuple[int, int, Any]] = []  # (call index, start ns, cuda start event)
        self._events: dict[int, tuple[Any, Any]] = {}
        self._handles: list[Any] = []
        self._root_calls = 0

    # -- hooks ---------------------------------------------------------------------------------
    def _name_for(self, module: nn.Module) -> str:
        paths = self._paths.get(id(module), ["?"])
        if len(paths) > 1 and self._stack:
            parent = self.calls[self._stack[-1][0]].name
            for p in paths:
                if p.startswith(parent + ".") if parent else True:
                    return p
        return paths[0]

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        is_root = module is self.root
        step = self._root_calls if is_root else max(self._root_calls - 1, 0)
        if is_root:
            self._root_calls += 1
        cls = type(module)
        call = ModuleCall(
            index=len(self.calls), name=self._name_for(module), type=cls.__name__,
            type_path=f"{cls.__module__}.{cls.__qualname__}", depth=len(self._stack),
            parent=self._stack[-1][0] if self._stack else None, step=step,
            input_shapes=shape_tree(list(args)) if self.record_shapes else [],
            kwarg_shapes={k: s for k, v in kwargs.items() if (s := shape_tree(v)) is not None}
            if self.record_shapes else {},
            output_shapes=None, cpu_time_us=0.0)
        self.calls.append(call)
        start_event = None
        if self.cuda_timing:
            start_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
        self._stack.append((call.index, time.perf_counter_ns(), start_event))

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._stack:
            return
        index, start_ns, start_event = self._stack.pop()
        call = self.calls[index]
        call.cpu_time_us = (time.perf_counter_ns() - start_ns) / 1000.0
        if self.record_shapes:
            call.output_shapes = shape_tree(output)
        if start_event is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events[index] = (start_event, end)

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> ModuleTracer:
        seen: set[int] = set()
        for _, module in self.root.named_modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            self._handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post, with_kwargs=True, always_call=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.finish()

    def finish(self) -> list[ModuleCall]:
        """Fill the derived fields (self time, CUDA time, call stacks)."""
        if self._events:
            torch.cuda.synchronize()
            for index, (start, end) in self._events.items():
                self.calls[index].cuda_time_us = start.elapsed_time(end) * 1000.0
            self._events.clear()
        child_time: dict[int, float] = defaultdict(float)
        for c in self.calls:
            if c.parent is not None:
                child_time[c.parent] += c.cpu_time_us
        for c in self.calls:
            c.self_cpu_time_us = max(c.cpu_time_us - child_time[c.index], 0.0)
            names = []
            p = c.parent
            while p is not None:
                names.append(self.calls[p].name or "<root>")
                p = self.calls[p].parent
            c.stack = " > ".join(reversed(names))
        return self.calls

    @property
    def steps(self) -> int:
        """Forward steps seen: calls of the root module."""
        return self._root_calls


# ------------------------------------------------------------------------------------------------
# Analysis of recorded calls
# ------------------------------------------------------------------------------------------------

def find_decoder_layers(root: nn.Module) -> LayerInfo | None:
    """The repeated decoder layers: the ``nn.ModuleList`` of same-typed modules holding the most parameters
    (so a MoE layer's experts list, or a vision tower, never wins over the language model's layers)."""
    best: tuple[tuple[int, int], str, nn.ModuleList] | None = None
    for name, module in root.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            types = {type(m) for m in module}
            if len(types) != 1:
                continue
            key = (sum(p.numel() for p in module.parameters()), len(module))
            if best is None or key > best[0]:
                best = (key, name, module)
    if best is None:
        return None
    _, prefix, mlist = best
    count = len(mlist)
    return LayerInfo(prefix=prefix, count=count, layer_type=type(mlist[0]).__name__,
                     first_layer=f"{prefix}.0" if prefix else "0")


def layer_index(name: str, layers: LayerInfo | None) -> int | None:
    """Which decoder layer a module path is in (None: outside the layers)."""
    if layers is None:
        return None
    head = layers.prefix + "." if layers.prefix else ""
    if not name.startswith(head):
        return None
    idx = name[len(head):].split(".", 1)[0]
    return int(idx) if idx.isdigit() else None


def stats(calls: Iterable[ModuleCall], key: str = "type") -> list[ModuleStat]:
    """Calls grouped by module ``type`` or ``name``, slowest total first."""
    groups: dict[str, list[ModuleCall]] = defaultdict(list)
    for c in calls:
        groups[getattr(c, key)].append(c)
    out = []
    for k, cs in groups.items():
        times = [c.cpu_time_us for c in cs]
        cuda = [c.cuda_time_us for c in cs if c.cuda_time_us is not None]
        out.append(ModuleStat(key=k, calls=len(cs), total_cpu_time_us=sum(times),
                              self_cpu_time_us=sum(c.self_cpu_time_us for c in cs),
                              mean_cpu_time_us=sum(times) / len(times), min_cpu_time_us=min(times),
                              max_cpu_time_us=max(times), total_cuda_time_us=sum(cuda) if cuda else None))
    out.sort(key=lambda s: -s.total_cpu_time_us)
    return out


def call_counts(calls: Iterable[ModuleCall], key: str = "type") -> dict[str, int]:
    """Number of calls per module type (or name), in first-call order."""
    counts: dict[str, int] = {}
    for c in calls:
        k = getattr(c, key)
        counts[k] = counts.get(k, 0) + 1
    return counts


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def operator_summary(calls: list[ModuleCall], layers: LayerInfo | None, steps: int,
                     root_type: str | None = None) -> list[OperatorCount]:
    """Per-step call count of each module type as ``a × layers + b``, derived from the recorded calls."""
    steps = max(steps, 1)
    inside: dict[str, int] = defaultdict(int)
    outside: dict[str, int] = defaultdict(int)
    order: list[str] = []
    for c in calls:
        if c.type not in inside and c.type not in outside:
            order.append(c.type)
        if layer_index(c.name, layers) is not None:
            inside[c.type] += 1
        else:
            outside[c.type] += 1
    out = []
    n_layers = layers.count if layers else 0
    for t in order:
        per_step = (inside[t] + outside[t]) / steps
        out_ps = outside[t] / steps
        per_layer: float | None = None
        if n_layers and inside[t]:
            per_layer = inside[t] / steps / n_layers
            a = _fmt_number(per_layer)
            formula = ("layers" if a == "1" else f"{a} × layers") + (f" + {_fmt_number(out_ps)}" if out_ps else "")
        else:
            per_layer = 0.0 if n_layers else None
            formula = _fmt_number(out_ps)
        out.append(OperatorCount(type=t, per_step=per_step, per_layer=per_layer, outside_layers=out_ps,
                                 formula=formula))
    return out


def resolve_type(spec: str) -> type | str:
    """A module type filter: a dotted import path ("pkg.mod.Class" / "pkg.mod:Class") becomes the class
    (matched with isinstance, so the user's own types and subclasses work); a bare name stays a name."""
    if "." not in spec and ":" not in spec:
        return spec
    mod_name, _, attr = spec.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"module type {spec!r} can't be imported ({err}); give a class name such as "
                             "RMSNorm or an importable path such as mypkg.layers.MyAttention") from None


def filter_calls(calls: list[ModuleCall], root: nn.Module | None = None, types: Iterable[str] = (),
                 prefixes: Iterable[str] = ()) -> list[ModuleCall]:
    """Calls whose module type matches one of ``types`` (class name or its suffix, or an import path checked
    with isinstance against ``root``'s modules) and whose path matches one of ``prefixes`` ("layers.0." matches
    "model.layers.0.mlp" too)."""
    resolved = [resolve_type(t) for t in types]
    names = {t for t in resolved if isinstance(t, str)}
    classes = tuple(t for t in resolved if isinstance(t, type))
    by_name: dict[str, nn.Module] = dict(root.named_modules(remove_duplicate=False)) if root is not None else {}
    prefixes = list(prefixes)

    def type_ok(c: ModuleCall) -> bool:
        if not resolved:
            return True
        # A bare name also matches as a suffix: "RMSNorm" picks Qwen2RMSNorm and vLLM's RMSNorm alike,
        # "Linear" picks nn.Linear and vLLM's QKVParallelLinear / RowParallelLinear.
        if c.type_path in names or any(c.type.endswith(n) for n in names):
            return True
        if classes:
            module = by_name.get(c.name)
            if module is not None and isinstance(module, classes):
                return True
            return c.type_path in {f"{k.__module__}.{k.__qualname__}" for k in classes}
        return False

    def prefix_ok(c: ModuleCall) -> bool:
        # Whole path components: "layers.1" never matches "layers.10"; a trailing dot ("layers.0.") means
        # strictly inside that module, without it the module itself counts too.
        if not prefixes:
            return True
        dotted = "." + c.name + "."
        for p in prefixes:
            core = p.strip(".")
            pos = dotted.find("." + core + ".")
            if pos < 0:
                continue
            if not p.endswith(".") or len(dotted) > pos + len(core) + 2:
                return True
        return False

    return [c for c in calls if type_ok(c) and prefix_ok(c)]


def first_layer_calls(calls: list[ModuleCall], layers: LayerInfo | None) -> list[ModuleCall]:
    """The first decoder layer's calls (and itself) in the first step, in call order."""
    if layers is None:
        return []
    first = layers.first_layer
    picked = [c for c in calls if (c.name == first or c.name.startswith(first + ".")) and c.step == calls[0].step]
    return picked


def known_type_names(calls: Iterable[ModuleCall]) -> list[str]:
    return sorted({c.type for c in calls})
