"""Code that runs where the runtime runs steps (the dev container, or the host's workbench.python), started by
path with that interpreter: standard library first, each file standalone (it imports nothing of the workbench).
hook/ holds only sitecustomize.py, put first on PYTHONPATH of a bench run. bench_env.py is also imported by the
workbench (workbench.guest.bench_env): the one environment capture, for the decode proxy and the trace files."""
