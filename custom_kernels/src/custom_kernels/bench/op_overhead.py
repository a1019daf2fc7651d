"""What the op path costs: cuBLAS through torch.ops.custom_kernels.linear vs F.linear directly.

    python -m custom_kernels.bench.op_overhead --host     # host time per eager call, both registrations
    CUSTOM_KERNELS_OP=custom_op python -m custom_kernels.bench.op_overhead
    CUSTOM_KERNELS_OP=direct    python -m custom_kernels.bench.op_overhead

Default (GPU): both sides launch the same cuBLAS kernels inside CUDA graphs, so the ratio isolates what the op
adds to the GPU's time (measured on an H200: +0.4 to +0.8%, within run-to-run noise). ``direct_keep`` keeps every
output alive, to tell an output-lifetime effect from an op effect. A replay runs no Python, so this cannot see
the op's host cost.

``--host``: the time the host spends per call, eagerly (no graph), for F.linear and the op registered both
ways (op.register: "direct" as vLLM registers its ops, "custom_op" through torch.library.custom_op), in one
process, alternating, and on a GPU the op launching each routed kernel (cuBLASLt, Triton split-K). The problem is
small enough (M=1) that the GPU outruns the host, so the loop's time is the host's; on a machine without CUDA the
same runs on CPU tensors. That is the cost a routed layer adds in every step vLLM runs outside a CUDA graph.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096, 1), (4096, 14336, 32), (6144, 4096, 1), (2048, 5632, 256)]
HOST_SHAPE = (896, 896, 1)  # Qwen2.5-0.5B's o_proj at decode: a ~4 us kernel, far below the host's cost per call


def gpu_graph_cost() -> None:
    os.environ["CUSTOM_KERNELS_DISABLE"] = "1"  # the op runs cuBLAS: same kernels on both sides
    import custom_kernels  # noqa: F401  (registers the op)
    from custom_kernels.op import REGISTRATION
    from custom_kernels.tune import operand_copies

    from .timing import time_calls

    keep: list[torch.Tensor] = []
    ratios = []
    for n, k, m in SHAPES:
        copies = operand_copies(m, n, k, torch.bfloat16, False, torch.device("cuda", torch.cuda.current_device()))
        variants = {
            "direct": [(lambda x=x, w=w: F.linear(x, w)) for x, w, _ in copies],
            "op": [(lambda x=x, w=w: torch.ops.custom_kernels.linear(x, w, None, "d")) for x, w, _ in copies],
            "direct_keep": [(lambda x=x, w=w: keep.append(F.linear(x, w))) for x, w, _ in copies],
        }
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(3):  # alternate the variants
            for name, calls in variants.items():
                times[name].append(time_calls(calls, reps=8).median_us)
                keep.clear()
        mean = {v: sum(t) / len(t) for v, t in times.items()}
        ratios.append(mean["op"] / mean["direct"])
        print(REGISTRATION, n, k, m, {v: round(t, 2) for v, t in mean.items()}, flush=True)
    print(f"OPCOST {REGISTRATION} {sum(ratios) / len(ratios):.4f}")


def host_cost(calls: int = 2000, rounds: int = 7) -> dict:
    """Host microseconds per eager call: F.linear, the op registered each way running cuBLAS, and (on a GPU) the
    directly registered op launching each routed kernel the table can pick (median over rounds, variants
    alternating within a round). A routed layer launches cuBLASLt or a Triton kernel where the table says so: its
    launch, not the op's dispatch, can be what the host pays in a step that runs outside a CUDA graph."""
    import custom_kernels  # noqa: F401
    from custom_kernels.op import REGISTRATIONS, force_kernel, register

    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    n, k, m = HOST_SHAPE
    x, w = torch.randn(m, k, device=device, dtype=dtype), torch.randn(n, k, device=device, dtype=dtype)
    layer = "model.layers.0.self_attn.o_proj"
    # name -> (call, kernel forced while it is timed)
    variants: dict[str, tuple] = {"F.linear": (lambda: F.linear(x, w), ("cublas", None))}
    ops = {how: register("custom_kernels_ab", f"linear_{how}", how) for how in REGISTRATIONS}
    for how, op in ops.items():
        variants[f"op ({how})"] = (lambda op=op: op(x, w, None, layer), ("cublas", None))
    if cuda:
        for kernel, config in routed_kernels(m, n, k, x, w):
            variants[f"op (direct, {kernel})"] = (lambda: ops["direct"](x, w, None, layer), (kernel, config))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    per_call: dict[str, list[float]] = {v: [] for v in variants}
    with torch.inference_mode():  # as vLLM runs the model; the warm-up too, so its dispatch caches are the ones timed
        for fn, forced in variants.values():
            with force_kernel(*forced):
                for _ in range(50):
                    fn()
        sync()
        for _ in range(rounds):
            for name, (fn, forced) in variants.items():
                with force_kernel(*forced):
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    sync()
                    per_call[name].append((time.perf_counter() - t0) / calls * 1e6)
    med = {v: statistics.median(t) for v, t in per_call.items()}
    spread = {v: [round(min(t), 2), round(max(t), 2)] for v, t in per_call.items()}
    return {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "shape": {"n": n, "k": k, "m": m},
            "calls_per_round": calls, "rounds": rounds, "median_us_per_call": {v: round(t, 2) for v, t in med.items()},
            "min_max_us": spread,
            "op_over_F.linear_us": {v: round(t - med["F.linear"], 2) for v, t in med.items() if v != "F.linear"}}


def routed_kernels(m: int, n: int, k: int, x: torch.Tensor, w: torch.Tensor) -> list[tuple[str, dict | None]]:
    """(kernel, config) for each kernel other than cuBLAS the table routes to that can run this problem here."""
    from custom_kernels.gemm.candidates import CANDIDATES
    from custom_kernels.tune import candidate_configs

    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    out = []
    for name in ("cublaslt", "triton_splitk"):
        try:
            configs = candidate_configs(name, m, n, k, x, w, None, sms)
            CANDIDATES[name].launch(x, w, None, configs[0])
        except Exception as err:  # e.g. the cuBLASLt extension can't build on this host: say so, time the rest
            print(f"host cost: {name} left out ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            continue
        out.append((name, configs[0]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", action="store_true", help="host time per eager call, both registrations")
    parser.add_argument("--calls", type=int, default=2000, help="--host: calls per round")
    parser.add_argument("--out", help="--host: also write the result here (JSON)")
    args = parser.parse_args(argv)
    if not args.host:
        gpu_graph_cost()
        return
    result = host_cost(args.calls)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
