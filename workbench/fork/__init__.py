"""The fork wing: the user's vLLM checkout (source), the GEMM-hook patch series (patches), and installing it
where the runtime runs steps (install)."""
