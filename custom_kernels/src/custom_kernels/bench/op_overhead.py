"""What the op path costs on the GPU: cuBLAS through torch.ops.custom_kernels.linear vs F.linear directly.

    CUSTOM_KERNELS_OP=custom_op python -m custom_kernels.bench.op_overhead
    CUSTOM_KERNELS_OP=direct    python -m custom_kernels.bench.op_overhead

Both sides launch the same cuBLAS kernels inside CUDA graphs, so the ratio isolates what the op adds
(measured on an H200: +0.4 to +0.8%, within run-to-run noise). ``direct_keep`` keeps every output
alive, to tell an output-lifetime effect from an op effect.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096, 1), (4096, 14336, 32), (6144, 4096, 1), (2048, 5632, 256)]


def main() -> None:
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


if __name__ == "__main__":
    main()
