"""Profiling one arm of a bench run with Nsight Compute / Nsight Systems, and attributing an A/B's end-to-end
change to kernel categories from one torch.profiler trace per arm. Plans are values (argv, env, files), parsers
take files and return rows, so both run and are tested without a GPU."""
