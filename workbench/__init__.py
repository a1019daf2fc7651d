"""vLLM kernel workbench: dev image, dev container and the kernel workflow around a vLLM fork."""

__version__ = "0.1.0"
