"""The end-to-end A/B of the custom GEMM in the real vLLM: plan, results, verdict, report, session, and the
decode proxy. Pure modules except session (which runs through workbench.runtime)."""
