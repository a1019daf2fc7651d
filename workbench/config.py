"""Workbench settings, read through invoke's own config system.

Precedence (lowest first): DEFAULTS below (the collection's defaults) < invoke.yaml in the project
< INVOKE_WORKBENCH_* environment variables < task flags. Tasks turn ``ctx.config.workbench`` into a
``Settings`` value so the logic below them never needs invoke.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Image repository and tag that `invoke build` produces; commits go to <image>:<tag>-compiled.
    "image": "vllm-workbench",
    "tag": "dev",
    "base_image": "vllm/vllm-openai:v0.13.0",
    # Extra CA certificates (a folder of *.crt) trusted inside the image; empty: docker/ca-certificates.
    "ca_certs": "",
    "container": "vllm-workbench",
    # Compose file and the service that declares the dev container (the CPU variant: <service>-cpu).
    "compose_file": "docker-compose.yml",
    "service": "dev",
    # The vLLM fork (a git submodule by default), relative to the project root or absolute.
    "fork": "vllm",
    # Host Hugging Face cache; empty: $HF_HOME, else ~/.cache/huggingface (what the hub client uses).
    "hf_cache": "",
    "results": "results",
    "ccache_volume": "vllm-workbench-ccache",
    # Precompiled vLLM wheels (vllm-<version>-*.whl) for `invoke install --precompiled`; the dev
    # container must see this folder at /workspace/wheels (read-only mount).
    "wheels": "wheels",
    # "all", "none" or a comma-separated list of GPU indices.
    "gpus": "all",
    # Variables that reach the container only at exec time, never its create config or an image.
    "secrets": ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY"],
    # UID/GID baked into the image's user; empty: the host user running invoke.
    "uid": "",
    "gid": "",
    # Where install, rebuild, bench, trace and tune run: "docker" (the dev container) or "host" (this
    # machine, with the interpreter below: a GPU node without Docker).
    "runtime": "docker",
    # The host runtime's Python (a venv's bin/python); empty: the interpreter running invoke.
    "python": "",
}


@dataclass(frozen=True)
class Settings:
    """The resolved workbench configuration; paths are absolute."""

    root: Path
    image: str = DEFAULTS["image"]
    tag: str = DEFAULTS["tag"]
    base_image: str = DEFAULTS["base_image"]
    ca_certs: str = ""
    container: str = DEFAULTS["container"]
    compose_file: str = DEFAULTS["compose_file"]
    service: str = DEFAULTS["service"]
    fork: str = DEFAULTS["fork"]
    hf_cache: str = ""
    results: str = DEFAULTS["results"]
    ccache_volume: str = DEFAULTS["ccache_volume"]
    wheels: str = DEFAULTS["wheels"]
    gpus: str = DEFAULTS["gpus"]
    secrets: tuple[str, ...] = field(default_factory=lambda: tuple(DEFAULTS["secrets"]))
    uid: str = ""
    gid: str = ""
    runtime: str = DEFAULTS["runtime"]
    python: str = ""

    @classmethod
    def from_mapping(cls, root: Path | str, values: dict[str, Any] | None = None) -> Settings:
        """Build settings from a config mapping (e.g. ``ctx.config.workbench``), ignoring unknown keys."""
        known = {f.name for f in fields(cls)} - {"root"}
        kwargs = {k: v for k, v in dict(values or {}).items() if k in known and v is not None}
        if "secrets" in kwargs:
            secrets = kwargs["secrets"]
            kwargs["secrets"] = tuple(secrets.split(",") if isinstance(secrets, str) else secrets)
        for key in ("uid", "gid"):
            if key in kwargs:
                kwargs[key] = str(kwargs[key])
        return cls(root=Path(root).resolve(), **kwargs)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply task flags: only the ones given (not None) win over the config."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    # Derived values -------------------------------------------------------------------------
    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def compiled_ref(self) -> str:
        return f"{self.image}:{self.tag}-compiled"

    def path(self, value: str) -> Path:
        """A configured path: ~ expanded, relative to the project root."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.root / p)

    @property
    def fork_path(self) -> Path:
        return self.path(self.fork)

    @property
    def hf_cache_path(self) -> Path:
        return self.path(self.hf_cache or os.environ.get("HF_HOME") or "~/.cache/huggingface")

    @property
    def results_path(self) -> Path:
        return self.path(self.results)

    @property
    def compose_path(self) -> Path:
        return self.path(self.compose_file)

    @property
    def host_uid(self) -> int:
        return int(self.uid) if self.uid else os.getuid()

    @property
    def host_gid(self) -> int:
        return int(self.gid) if self.gid else os.getgid()

    @property
    def wheels_path(self) -> Path:
        return self.path(self.wheels)


def settings_from_context(ctx) -> Settings:
    """Settings from an invoke Context (tasks.py puts the project root into the config)."""
    values = dict(ctx.config.get("workbench", {}))
    return Settings.from_mapping(values.pop("root", os.getcwd()), values)
