"""What gets traced: a vLLM V1 ``LLM`` (model reached in-process) or a plain Hugging Face model.

vLLM V1 runs the model in an engine-core process by default, where hooks installed in the script's
process see nothing. ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps the engine core (and, with one GPU, the
worker) in this process; the model is then reached with ``LLM.apply_model`` (0.13+, a collective RPC that
runs in-process here) or, where that is missing, through ``llm_engine.model_executor.driver_worker``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError

EAGER_REASON = ("enforce_eager=True: CUDA graph replays and torch.compile'd graphs run without calling the "
                "modules' Python forward, so forward hooks would see only the first (captured) call")


@dataclass
class Target:
    """A model and a callable that runs the traced workload (prefill + decode steps) on it."""

    model: nn.Module
    run: Callable[[], Any]
    backend: str                                  # "vllm" or "hf"
    device: str                                   # "cuda" or "cpu"
    description: str
    notes: list[str] = field(default_factory=list)
    profile_dir: Path | None = None               # vLLM's own profiler writes here (kernels, --profiler vllm)
    start_profile: Callable[[], None] | None = None
    stop_profile: Callable[[], None] | None = None


# ------------------------------------------------------------------------------------------------
# Hugging Face (no vLLM, random weights)
# ------------------------------------------------------------------------------------------------

def hf_model_from_config(config: dict[str, Any] | str | Path, dtype: torch.dtype = torch.float32,
                         device: str = "cpu", seed: int = 0) -> nn.Module:
    """A randomly initialised causal LM from a config dict or config.json path (nothing downloaded)."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise WorkbenchError("transformers is not installed: pip install 'transformers>=4.56'") from None
    if not isinstance(config, dict):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise WorkbenchError(f"--hf-config {config}: no such config.json; give a path to a model's config.json")
        config = json.loads(path.read_text())
    config = dict(config)
    model_type = config.pop("model_type", None)
    if not model_type:
        raise WorkbenchError("the HF config has no model_type: use a model's config.json (e.g. Qwen2's)")
    cfg = _config_for(AutoConfig, model_type, config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)  # initialised in fp32, then cast (same on transformers 4 and 5)
    return model.to(device=device, dtype=dtype).eval()


def _config_for(auto_config: Any, model_type: str, values: dict[str, Any]) -> Any:
    """The config class of ``model_type`` filled with ``values`` (transformers 4 and 5)."""
    try:
        if hasattr(auto_config, "for_model"):
            return auto_config.for_model(model_type, **values)
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        return CONFIG_MAPPING[model_type](**values)
    except (KeyError, ValueError) as err:
        raise WorkbenchError(f"model_type {model_type!r} is unknown to this transformers version ({err}); "
                             "use a config.json of a model it supports, e.g. qwen2 or llama") from None


def prompt_ids(prompt: str, vocab_size: int, prompt_tokens: int | None = None) -> list[int]:
    """Token ids without a tokenizer: the prompt's UTF-8 bytes folded into the vocabulary (deterministic)."""
    data = list(prompt.encode()) or [0]
    n = prompt_tokens or len(data)
    return [(data[i % len(data)] * 31 + i) % vocab_size for i in range(n)]


def greedy_generate(model: nn.Module, ids: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """Prefill then ``max_tokens - 1`` single-token decode steps with the KV cache (one forward per token)."""
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        generated = [token]
        for _ in range(max_tokens - 1):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
            generated.append(token)
    return torch.cat(generated, dim=1)


def hf_target(config: dict[str, Any] | str | Path, prompt: str, max_tokens: int, device: str = "auto",
              dtype: str = "auto", prompt_tokens: int | None = None, batch_size: int = 1) -> Target:
    """A random-weight HF model from a config, running greedy generation on ``prompt``."""
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dev == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError("--device cuda but torch sees no CUDA device: use --device cpu")
    dt = resolve_dtype(dtype, dev)
    model = hf_model_from_config(config, dtype=dt, device=dev)
    vocab = int(model.config.vocab_size)
    ids = torch.tensor([prompt_ids(prompt, vocab, prompt_tokens)] * batch_size, device=dev)
    name = type(model).__name__
    desc = (f"{name} (HF transformers, random weights, {dt}, {dev}): batch {batch_size}, "
            f"{ids.shape[1]} prompt tokens, {max_tokens} generated")
    return Target(model=model, run=lambda: greedy_generate(model, ids, max_tokens), backend="hf", device=dev,
                  description=desc)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        raise WorkbenchError(f"--dtype {dtype!r} is not a torch dtype: use auto, float32, float16 or bfloat16")
    return value


@contextlib.contextmanager
def swapped_linear_gemm(model: nn.Module, gemm: Callable[..., torch.Tensor]) -> Iterator[int]:
    """Route every ``nn.Linear`` forward of ``model`` through ``gemm(layer, x, weight, bias)`` (the
    custom_kernels.unquantized_gemm contract); yields how many layers were swapped, restores on exit."""
    swapped: list[nn.Linear] = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            def forward(x: torch.Tensor, _layer: nn.Linear = module) -> torch.Tensor:
                return gemm(_layer, x, _layer.weight, _layer.bias)

            module.forward = forward  # instance attribute shadows the class method
            swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward


# ------------------------------------------------------------------------------------------------
# vLLM V1
# ------------------------------------------------------------------------------------------------

def vllm_profiler_setup(llm_init_params: set[str], profiler_fields: set[str], trace_dir: str
                        ) -> tuple[dict[str, Any], dict[str, str]]:
    """How to turn on vLLM's torch profiler: (LLM kwargs, environment variables).

    vLLM >= 0.13 takes ``LLM(profiler_config={...})`` (VLLM_TORCH_PROFILER_DIR is deprecated there and
    removed in 0.16); older releases only read VLLM_TORCH_PROFILER_DIR. Only fields the installed
    ProfilerConfig has are passed: plain JSON traces, no Python stacks (smaller, faster to parse).
    """
    if "profiler_config" in llm_init_params:
        wanted = {"profiler": "torch", "torch_profiler_dir": trace_dir, "torch_profiler_with_stack": False,
                  "torch_profiler_use_gzip": False, "torch_profiler_record_shapes": False}
        config = {k: v for k, v in wanted.items() if k in profiler_fields or not profiler_fields}
        return {"profiler_config": config}, {}
    return {}, {"VLLM_TORCH_PROFILER_DIR": trace_dir, "VLLM_TORCH_PROFILER_WITH_STACK": "0"}


def _profiler_fields() -> set[str]:
    try:
        from vllm.config import ProfilerConfig
    except ImportError:
        return set()
    names = getattr(ProfilerConfig, "__dataclass_fields__", None) or getattr(ProfilerConfig, "model_fields", {})
    return set(names)


def model_from_llm(llm: Any) -> nn.Module:
    """The nn.Module the in-process worker runs (needs VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    if hasattr(llm, "apply_model"):
        models = llm.apply_model(lambda model: model)
        if models and isinstance(models[0], nn.Module):
            return models[0]
    with contextlib.suppress(AttributeError):
        worker = llm.llm_engine.model_executor.driver_worker
        worker = getattr(worker, "worker", worker)
        return worker.get_model() if hasattr(worker, "get_model") else worker.model_runner.model
    raise WorkbenchError("could not reach the model inside vLLM: run with VLLM_ENABLE_V1_MULTIPROCESSING=0 "
                         "and tensor_parallel_size=1 (the scripts set both)")


def vllm_target(model: str, prompt: str, max_tokens: int, enforce_eager: bool, dtype: str = "auto",
                max_model_len: int = 2048, gpu_memory_utilization: float = 0.5, batch_size: int = 1,
                vllm_profiler_dir: str | None = None, custom_gemm: bool = False,
                extra: dict[str, Any] | None = None) -> Target:
    """A vLLM V1 LLM with the engine core in this process; ``run`` generates greedily."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        import vllm
        from vllm import LLM, SamplingParams
    except ImportError:
        raise WorkbenchError("vllm is not importable here: run inside the dev container (invoke shell), or "
                             "use --hf-config path/to/config.json to trace a plain HF model") from None
    kwargs: dict[str, Any] = dict(model=model, enforce_eager=enforce_eager, dtype=dtype, max_model_len=max_model_len,
                                  gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=1,
                                  **(extra or {}))
    notes = []
    if custom_gemm:
        # The custom_kernels plugin (entry point vllm.general_plugins) routes unquantized GEMMs only when
        # this is set; the engine core is in this process, so setting it before LLM(...) is enough.
        os.environ["VLLM_USE_CUSTOM_GEMM"] = "1"
        notes.append("custom GEMM on: VLLM_USE_CUSTOM_GEMM=1 (custom_kernels plugin)")
    if vllm_profiler_dir:
        params = set(inspect.signature(LLM.__init__).parameters)
        llm_kwargs, env = vllm_profiler_setup(params, _profiler_fields(), vllm_profiler_dir)
        kwargs.update(llm_kwargs)
        os.environ.update(env)
        how = "LLM(profiler_config=...)" if llm_kwargs else "VLLM_TORCH_PROFILER_DIR"
        notes.append(f"vLLM {vllm.__version__}: its torch profiler enabled through {how} -> {vllm_profiler_dir}")
    llm = LLM(**kwargs)
    net = model_from_llm(llm)
    params_ = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    prompts = [prompt] * batch_size

    def run() -> Any:
        return llm.generate(prompts, params_, use_tqdm=False)

    desc = (f"{model} (vLLM {vllm.__version__} V1, in-process engine core, "
            f"{'eager' if enforce_eager else 'compiled + CUDA graphs'}): batch {batch_size}, {max_tokens} tokens")
    return Target(model=net, run=run, backend="vllm", device="cuda" if torch.cuda.is_available() else "cpu",
                  description=desc, notes=notes, profile_dir=Path(vllm_profiler_dir) if vllm_profiler_dir else None,
                  start_profile=llm.start_profile if vllm_profiler_dir else None,
                  stop_profile=llm.stop_profile if vllm_profiler_dir else None)
