"""vLLM general plugin: route unquantized linear GEMMs to ``custom_kernels.unquantized_gemm`` on a
stock (unpatched) vLLM, when ``VLLM_USE_CUSTOM_GEMM=1`` as a layer is built.

vLLM loads ``vllm.general_plugins`` entry points in every process before it builds the model, so
``register()`` runs early enough to wrap the linear layer classes. Why the wrapping is done on the
classes rather than on ``dispatch_unquantized_gemm``: the binding of that function differs by release
and neither can be redirected from outside — vLLM 0.13.0's linear.py imported the name at module load
and calls it on every forward; 0.33.0 calls it once in ``UnquantizedLinearMethod.__init__`` and keeps
the result in ``self._gemm_impl``. Wrapping ``LinearBase.__init__`` (decide per layer, once, from its
prefix) and switching a chosen layer's method to a subclass whose ``apply`` routes and whose
``process_weights_after_loading`` skips the CPU weight packing (which would replace ``layer.weight`` with
an empty tensor) works the same on both, and leaves every other layer on vLLM's own method.

``VLLM_CUSTOM_GEMM_LAYERS`` selects layers by prefix, as in the patch series: comma-separated globs
on the full prefix; a pattern without wildcards also matches the layers below it; ``!pattern``
excludes; empty selects every unquantized linear layer. With the patch series applied (the fork's
envs.py knows VLLM_USE_CUSTOM_GEMM) the fork chooses the layers itself; the plugin only applies the route
rule below to the layers the fork chose (``layer.use_custom_gemm``, read by the fork's GEMM router on every
forward, hence before torch.compile traces it), so both routes route the same layers.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os

logger = logging.getLogger(__name__)

_MARK = "_custom_gemm_plugin"  # set on the wrappers: register() is idempotent


def _enabled() -> bool:
    return os.environ.get("VLLM_USE_CUSTOM_GEMM", "0").strip().lower() in ("1", "true", "yes")


def layer_patterns() -> list[str]:
    """The VLLM_CUSTOM_GEMM_LAYERS patterns, empty entries dropped."""
    return [p.strip() for p in os.environ.get("VLLM_CUSTOM_GEMM_LAYERS", "").split(",") if p.strip()]


def layer_selected(prefix: str, patterns: list[str]) -> bool:
    """Whether a layer prefix is chosen by the patterns (same rules as the patch series)."""

    def match(pattern: str) -> bool:
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(prefix, pattern)
        return prefix == pattern or prefix.startswith(pattern + ".")

    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!")]
    if includes and not any(match(p) for p in includes):
        return False
    return not any(match(p) for p in excludes)


# VLLM_CUSTOM_GEMM_ROUTE: "tuned" (default: a layer routes only where the dispatch table has a non-cuBLAS
# winner for its shape on this GPU) or "all" (every selected layer, e.g. to test the route itself).
SWITCHES = ("VLLM_USE_CUSTOM_GEMM", "VLLM_CUSTOM_GEMM_LAYERS", "VLLM_CUSTOM_GEMM_ROUTE")


def route_all() -> bool:
    return os.environ.get("VLLM_CUSTOM_GEMM_ROUTE", "tuned").strip().lower() == "all"


def _fork_is_patched() -> bool:
    from vllm import envs

    getter = getattr(envs, "environment_variables", {}).get("VLLM_USE_CUSTOM_GEMM")
    return getter is not None and not getattr(getter, _MARK, False)


def register_switches() -> None:
    """Make the switches vLLM environment variables: vLLM hashes every one it knows into its
    torch.compile cache key (``envs.compile_factors``), so a custom run can never load a baseline run's
    compiled graph (measured on vLLM 0.24.0 before this: 0 custom calls after a baseline run with the
    cache on), and vLLM no longer warns that the variable is unknown."""
    from vllm import envs

    known = getattr(envs, "environment_variables", None)
    if not isinstance(known, dict):
        return
    for name in SWITCHES:
        if name not in known:
            def getter(name: str = name) -> str:
                return os.environ.get(name, "")

            setattr(getter, _MARK, True)
            known[name] = getter


def keeps_route(layer) -> bool:
    """Whether a selected layer really routes, decided once when its weights are loaded (its shape, dtype and
    device are known then, and torch.compile has not traced it yet): only where the dispatch table has a
    non-cuBLAS winner for its shape on this GPU (``custom_kernels.route_decision``), unless
    VLLM_CUSTOM_GEMM_ROUTE=all. Each decision is kept in ``custom_kernels.ROUTING`` (and the counter dumps)."""
    import custom_kernels
    from custom_kernels import counters

    routed, why = (True, "VLLM_CUSTOM_GEMM_ROUTE=all") if route_all() else \
        custom_kernels.route_decision(layer.weight)
    counters.record_routing(getattr(layer, "prefix", "") or type(layer).__name__, routed, why)
    return routed


def _routed_class(method: type) -> type:
    """The layer's own UnquantizedLinearMethod, made to call the custom GEMM: a subclass its instance is
    switched to, so layers that don't route keep vLLM's method untouched (no wrapper on their path). A layer
    that does not keep the route (``keeps_route``) goes back to vLLM's method when its weights load."""
    import custom_kernels

    class CustomGemmLinearMethod(method):
        def apply(self, layer, x, bias=None):
            return custom_kernels.unquantized_gemm(layer, x, layer.weight, bias)

        def process_weights_after_loading(self, layer):
            if not keeps_route(layer):
                self.__class__ = method
                layer.use_custom_gemm = False
                return method.process_weights_after_loading(self, layer)
            return None  # keep the plain [N, K] weight: the CPU path would pack it and drop layer.weight

    CustomGemmLinearMethod.__qualname__ = f"CustomGemm{method.__qualname__}"
    return CustomGemmLinearMethod


def _rule_on_patched_fork() -> None:
    """On a patched fork: a layer the fork chose keeps the route only by ``keeps_route``, decided before
    vLLM's own weight processing (whose CPU path also reads ``use_custom_gemm``)."""
    from vllm.model_executor.layers import linear

    method = linear.UnquantizedLinearMethod
    original = method.process_weights_after_loading
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def process_weights_after_loading(self, layer):
        if getattr(layer, "use_custom_gemm", False):
            layer.use_custom_gemm = keeps_route(layer)
        return original(self, layer)

    setattr(process_weights_after_loading, _MARK, True)
    method.process_weights_after_loading = process_weights_after_loading


def register() -> None:
    """Entry point (``vllm.general_plugins``): the switches become vLLM variables and every unquantized
    linear layer decides when it is built whether it routes.

    The decision is made per layer at construction, not here: vLLM loads plugins once per process, and an
    engine-core process forked from a front end (several engines in one process, each with its own switch)
    inherits the front end's plugin state; what it must not inherit is the switch's value at that time."""
    if _fork_is_patched():
        if _enabled():
            logger.info("custom_kernels plugin: the vLLM fork routes VLLM_USE_CUSTOM_GEMM itself (patch series); "
                        "the plugin applies the route rule to the layers it chose")
        register_switches()  # the fork registers two of the three: VLLM_CUSTOM_GEMM_ROUTE keys the cache too
        _rule_on_patched_fork()
        return
    register_switches()
    from vllm.model_executor.layers import linear

    method = linear.UnquantizedLinearMethod
    base = linear.LinearBase
    if getattr(base.__init__, _MARK, False):
        return
    original_init = base.__init__
    routed: list[type] = []  # the subclass, made on the first routed layer (importing custom_kernels then)

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        quant = getattr(self, "quant_method", None)
        self.use_custom_gemm = (type(quant) is method and _enabled()
                                and layer_selected(getattr(self, "prefix", "") or "", layer_patterns()))
        if self.use_custom_gemm:
            if not routed:
                routed.append(_routed_class(method))
                logger.info("custom_kernels plugin: unquantized linear GEMMs -> custom_kernels.unquantized_gemm "
                            "(layers: %s)", ",".join(layer_patterns()) or "all")
            quant.__class__ = routed[0]

    setattr(__init__, _MARK, True)
    base.__init__ = __init__
