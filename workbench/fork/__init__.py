"""The fork wing: the user's vLLM checkout and its state (checkout, source), the GEMM-hook patch series
(series: files and releases; patches: apply, check, revert; refresh: save the fork's commits), and
installing it where the runtime runs steps (install). Depends on the ground floor only; the container wing
reads the fork's state from here."""
