"""Run in a subprocess: import a vLLM source tree on CPU, build its own decoder layer and lm_head for each
given config (on the meta device: shapes only, no memory) and print JSON: every parameter's shape.

usage: python decoder_probe.py VLLM_TREE  (stdin: a JSON list of config.json dicts, or of
{"config": {...}, "tp": N} to build one tensor-parallel rank's layers)
The tree goes first on sys.path so this process imports exactly that source. Qwen2 configs build
vllm/model_executor/models/qwen2.py's layer, every other model type llama.py's (which mistral, phi3
and most dense decoders reuse).

Tensor parallelism: the process is one rank of a one-process group whose tensor-parallel group reports
world size N (GroupCoordinator.world_size, what get_tensor_model_parallel_world_size returns to every layer),
so vLLM's own partition arithmetic (divide(), the KV-head replicas, the padded vocabulary's split) sizes rank 0's
weights; nothing collective runs while layers are built on the meta device.
"""

from __future__ import annotations

import json
import sys
import tempfile
from types import SimpleNamespace


class _PlainTextModel(SimpleNamespace):
    """Stands in for ModelConfig where attention layers look: the dtype given, every other field None (no
    multimodal prefix, no MLA, no sliding-window variant): none of them changes a linear layer's shape."""

    def __getattr__(self, name: str) -> None:
        return None


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    import torch
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    # The sdist has no installed dist metadata, so vLLM can't detect its platform: force CPU.
    vllm.platforms._current_platform = CpuPlatform()
    from transformers import AutoConfig
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel, parallel_state
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
    from vllm.model_executor.models import llama, qwen2

    report = []
    vllm_config = VllmConfig()
    with set_current_vllm_config(vllm_config):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method="file://" + tempfile.mktemp(prefix="wb-dist-"))
        initialize_model_parallel(1, 1)
        # 0.33.0's attention layers read the model dtype and a few feature switches off the current config.
        # A real ModelConfig would resolve a checkpoint: the probe gives the dtype and leaves every switch unset.
        object.__setattr__(vllm_config, "model_config", _PlainTextModel(dtype=torch.float32))
        for i, item in enumerate(json.loads(sys.stdin.read())):
            raw, tp = (item["config"], item["tp"]) if "tp" in item else (item, 1)
            parallel_state._TP.world_size = tp
            prefix = f"model{i}.layers.0"  # vLLM refuses two attention layers of one name
            values = dict(raw)
            config = AutoConfig.for_model(values.pop("model_type"), **values)
            with torch.device("meta"):
                if config.model_type == "qwen2":
                    layer = qwen2.Qwen2DecoderLayer(config=config, prefix=prefix)
                else:
                    layer = llama.LlamaDecoderLayer(vllm_config=vllm_config, config=config, prefix=prefix)
                lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix=f"lm_head{i}")
            shapes = {name: list(p.shape) for name, p in layer.named_parameters()}
            shapes.update({f"lm_head.{name}": list(p.shape) for name, p in lm_head.named_parameters()})
            report.append(shapes)
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()
