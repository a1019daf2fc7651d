"""plan-memory: KV-cache sizing as the fork's vLLM release does it (plan), each release's rules (kv_sizing),
and vLLM's own sizing code run in a child process when it imports (vllm_sizing)."""
