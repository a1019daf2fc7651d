"""The module tracer on tiny, randomly initialised HF Qwen2 and Llama models (built in code, no download):
call order, counts and shapes checked against what each config implies."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

from workbench.trace.modules import (  # noqa: E402
    ModuleTracer,
    call_counts,
    filter_calls,
    find_decoder_layers,
    first_layer_calls,
    operator_summary,
    stats,
)
from workbench.trace.records import ModuleCall, load_trace, save_trace  # noqa: E402
from workbench.trace.targets import greedy_generate, hf_model_from_config, prompt_ids  # noqa: E402

# Odd sizes on purpose: every projection's output width differs, so a swapped shape can't pass.
CONFIGS = {
    "qwen2": dict(model_type="qwen2", vocab_size=211, hidden_size=96, intermediate_size=232, num_hidden_layers=3,
                  num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=False),
    "llama": dict(model_type="llama", vocab_size=173, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
                  tie_word_embeddings=False),
}
PROMPT_TOKENS = 7
MAX_TOKENS = 3


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def traced(request):
    cfg = CONFIGS[request.param]
    model = hf_model_from_config(cfg)
    ids = torch.tensor([prompt_ids("hello tracer", cfg["vocab_size"], PROMPT_TOKENS)])
    with ModuleTracer(model) as tracer:
        greedy_generate(model, ids, MAX_TOKENS)
    return cfg, model, tracer


def _per_step(counts: dict[str, int], suffix: str) -> int:
    (key,) = [k for k in counts if k.endswith(suffix)]
    return counts[key] // MAX_TOKENS


def test_counts_follow_the_config(traced):
    cfg, model, tracer = traced
    n = cfg["num_hidden_layers"]
    counts = call_counts(tracer.calls)
    assert tracer.steps == MAX_TOKENS  # one forward per generated token
    assert _per_step(counts, "RMSNorm") == 2 * n + 1  # input + post-attention norm per layer, final norm
    assert _per_step(counts, "DecoderLayer") == n
    assert _per_step(counts, "Attention") == n
    assert _per_step(counts, "MLP") == n
    # q, k, v, o, gate, up, down per layer + lm_head
    assert counts["Linear"] // MAX_TOKENS == 7 * n + 1
    assert counts["Embedding"] // MAX_TOKENS == 1
    layers = find_decoder_layers(model)
    assert (layers.prefix, layers.count, layers.first_layer) == ("model.layers", n, "model.layers.0")


def test_operator_summary_is_derived(traced):
    cfg, model, tracer = traced
    ops = {o.type: o for o in operator_summary(tracer.calls, find_decoder_layers(model), tracer.steps)}
    (norm,) = [o for t, o in ops.items() if t.endswith("RMSNorm")]
    assert norm.formula == "2 × layers + 1"
    assert norm.per_step == 2 * cfg["num_hidden_layers"] + 1
    assert ops["Linear"].formula == "7 × layers + 1"
    (layer,) = [o for t, o in ops.items() if t.endswith("DecoderLayer")]
    assert layer.formula == "layers" and layer.outside_layers == 0


def test_first_layer_order_and_shapes(traced):
    cfg, model, tracer = traced
    calls = first_layer_calls(tracer.calls, find_decoder_layers(model))
    rel = [c.name.removeprefix("model.layers.0").lstrip(".") for c in calls]
    assert rel == ["", "input_layernorm", "self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                   "self_attn.o_proj", "post_attention_layernorm", "mlp", "mlp.gate_proj", "mlp.act_fn",
                   "mlp.up_proj", "mlp.down_proj"]
    by = {r: c for r, c in zip(rel, calls, strict=True)}
    h, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = h // heads
    t = PROMPT_TOKENS
    assert by["self_attn.q_proj"].input_shapes == [[1, t, h]]
    assert by["self_attn.q_proj"].output_shapes == [1, t, heads * head_dim]
    assert by["self_attn.k_proj"].output_shapes == [1, t, kv * head_dim]
    assert by["self_attn.v_proj"].output_shapes == [1, t, kv * head_dim]
    assert by["mlp.gate_proj"].output_shapes == [1, t, cfg["intermediate_size"]]
    assert by["mlp.down_proj"].input_shapes == [[1, t, cfg["intermediate_size"]]]
    assert by["input_layernorm"].output_shapes == [1, t, h]
    # Nesting: projections are children of self_attn, which is a child of the layer.
    assert by["self_attn.q_proj"].parent == by["self_attn"].index
    assert by["self_attn"].parent == by[""].index
    assert by["self_attn.q_proj"].stack.endswith("model.layers.0 > model.layers.0.self_attn")


def test_decode_steps_see_one_token(traced):
    cfg, _, tracer = traced
    lm_heads = [c for c in tracer.calls if c.name == "lm_head"]
    assert [c.step for c in lm_heads] == list(range(MAX_TOKENS))
    assert lm_heads[0].output_shapes == [1, PROMPT_TOKENS, cfg["vocab_size"]]
    assert all(c.output_shapes == [1, 1, cfg["vocab_size"]] for c in lm_heads[1:])


def test_times_are_consistent(traced):
    _, _, tracer = traced
    for c in tracer.calls:
        assert c.cpu_time_us >= c.self_cpu_time_us >= 0
    root = [c for c in tracer.calls if c.depth == 0]
    assert len(root) == MAX_TOKENS
    rows = stats(tracer.calls, "type")
    assert sum(r.calls for r in rows) == len(tracer.calls)


def test_filters_by_prefix_type_and_import_path(traced):
    _, model, tracer = traced
    under0 = filter_calls(tracer.calls, model, prefixes=["layers.0."])
    assert under0 and all(c.name.startswith("model.layers.0.") for c in under0)
    assert not any(c.name == "model.layers.0" for c in under0)
    linears = filter_calls(tracer.calls, model, types=["Linear"], prefixes=["layers.1."])
    assert {c.name.rsplit(".", 1)[-1] for c in linears} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"}
    norms = filter_calls(tracer.calls, model, types=["RMSNorm"])  # suffix of Qwen2RMSNorm / LlamaRMSNorm
    assert len(norms) == (2 * len(model.model.layers) + 1) * MAX_TOKENS
    mlp_cls = type(model.model.layers[0].mlp)
    by_path = filter_calls(tracer.calls, model, types=[f"{mlp_cls.__module__}.{mlp_cls.__qualname__}"])
    assert len(by_path) == len(model.model.layers) * MAX_TOKENS


class UserBlock(nn.Module):
    """A user's own module type, shared under two paths (like vLLM's cached rotary embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(x).relu()


class TwoUsers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        shared = UserBlock()
        self.a = nn.Sequential(shared)
        self.b = nn.Sequential(shared)

    def forward(self, x):
        return self.b(self.a(x))


def test_user_types_and_shared_modules():
    model = TwoUsers()
    with ModuleTracer(model) as tracer:
        model(torch.randn(2, 8))
    names = [c.name for c in tracer.calls]
    assert names == ["", "a", "a.0", "a.0.proj", "b", "b.0", "b.0.proj"]
    spec = f"{UserBlock.__module__}.{UserBlock.__qualname__}"
    picked = filter_calls(tracer.calls, model, types=[spec])
    assert [c.name for c in picked] == ["a.0", "b.0"]


def test_hooks_removed_and_exception_safe():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(4, 4), Boom())
    tracer = ModuleTracer(model)
    with pytest.raises(RuntimeError), tracer:
        model(torch.randn(1, 4))
    assert not tracer._stack  # always_call post-hooks popped every frame
    count = len(tracer.calls)
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 4))
    assert len(tracer.calls) == count  # hooks are gone after exit


def test_json_round_trip(traced, tmp_path):
    _, model, tracer = traced
    layers = find_decoder_layers(model)
    path = save_trace(tmp_path / "layers.json", "layers",
                      {"calls": tracer.calls[:20], "layers": layers,
                       "operators": operator_summary(tracer.calls, layers, tracer.steps)})
    doc = load_trace(path)
    assert doc["kind"] == "layers"
    # The environment is the bench sessions' capture (workbench/guest/bench_env.py), field for field.
    env = doc["environment"]
    assert env["torch"]["version"] == torch.__version__ and env["torch"]["cuda_available"] is torch.cuda.is_available()
    assert {"time_utc", "host", "python", "platform", "gpus", "transformers", "env"} <= set(env)
    assert doc["calls"] == tracer.calls[:20] and isinstance(doc["calls"][0], ModuleCall)
    assert json.loads(path.read_text())["calls"][0]["cpu_time_us"] == tracer.calls[0].cpu_time_us


def test_decoder_layers_beat_longer_expert_lists():
    """A MoE-style model with more experts than layers: the layers list is still the decoder layers."""

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.Linear(16, 16)
            self.experts = nn.ModuleList(nn.Linear(16, 2) for _ in range(8))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(Layer() for _ in range(2))

    info = find_decoder_layers(Model())
    assert (info.prefix, info.count, info.layer_type) == ("layers", 2, "Layer")
