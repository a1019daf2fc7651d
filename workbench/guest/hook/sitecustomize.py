"""`invoke bench` puts this folder first on PYTHONPATH: dump custom_kernels call counters from every
Python process of a run.

vLLM V1 runs the model in an engine-core subprocess, so the in-process CALL_COUNTS of the CLI
process say nothing. This file is found through PYTHONPATH, so every process (fork or spawn) loads
it; it writes its counters to $CUSTOM_KERNELS_COUNTS_FILE ({pid} = the process id).
"""
import contextlib
import os
import sys


def _chain_next_sitecustomize():
    # Keep the image's own sitecustomize (if any) working: load the next one on sys.path.
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if os.path.abspath(entry or ".") == here:
            continue
        candidate = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_next_sitecustomize", candidate)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


def _error_dump(target, message):
    import json
    path = target.replace("{pid}", str(os.getpid()))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"pid": os.getpid(), "error": message, "total_calls": 0, "call_counts": {}}, fh)


def _install():
    target = os.environ.get("CUSTOM_KERNELS_COUNTS_FILE")
    if not target:
        return
    # Load counts_dump.py by file, without importing the custom_kernels package: whether and when vLLM
    # imports it (plugin or patch) must not change; the dump records if it did.
    import importlib.util
    spec = importlib.util.find_spec("custom_kernels")
    if spec is None or not spec.submodule_search_locations:
        _error_dump(target, "custom_kernels is not installed in this Python environment")
        return
    source = os.path.join(next(iter(spec.submodule_search_locations)), "counts_dump.py")
    if not os.path.isfile(source):
        _error_dump(target, f"custom_kernels has no counts_dump.py ({source}): update custom_kernels")
        return
    dump_spec = importlib.util.spec_from_file_location("_custom_kernels_counts_dump", source)
    module = importlib.util.module_from_spec(dump_spec)
    sys.modules["_custom_kernels_counts_dump"] = module
    dump_spec.loader.exec_module(module)
    module.install_exit_dump(target)


with contextlib.suppress(Exception):
    _chain_next_sitecustomize()
try:
    _install()
except Exception as err:  # never break the process; the reader reports the missing or errored dump
    with contextlib.suppress(Exception):
        _error_dump(os.environ["CUSTOM_KERNELS_COUNTS_FILE"], f"counter hook failed: {type(err).__name__}: {err}")
