"""plan-memory: the model as vLLM builds it (model_shape), vLLM's memory budget and the recommendation
(budget), each release's KV-cache rules (kv_sizing), vLLM's own sizing code run in a child process when it
imports (vllm_sizing), whose sizing runs (plan), and the explanation printed (report)."""
