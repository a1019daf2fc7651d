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

from workbench.errors import WorkbenchError

DEFAULTS: dict[str, Any] = {
    # Image repository and tag that `invoke build` produces; commits go to <image>:<tag>-compiled.
    "image": "vllm-workbench",
    "tag": "dev",
    # Base image of the dev image; empty: vllm/vllm-openai:v<release> of the fork (workbench/container/versions.py).
    "base_image": "",
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
    # Comma-separated (a list in invoke.yaml works too): text, so INVOKE_WORKBENCH_SECRETS can override it
    # (invoke refuses to cast an environment variable onto a list default).
    "secrets": "HF_TOKEN,HUGGING_FACE_HUB_TOKEN,WANDB_API_KEY",
    # UID/GID baked into the image's user; empty: the host user running invoke.
    "uid": "",
    "gid": "",
    # Where install, rebuild, bench, trace and tune run: "docker" (the dev container) or "host" (this
    # machine, with the interpreter below: a GPU node without Docker).
    "runtime": "docker",
    # The host runtime's Python (a venv's bin/python); empty: the interpreter running invoke.
    "python": "",
    # How `invoke build` builds: "auto" (BuildKit through the docker CLI where the host has it, with apt/pip
    # cache mounts; else the daemon's classic builder), "buildkit" or "classic".
    "builder": "auto",
    # Who resolves docker-compose.yml (.env, interpolation, override files, profiles): "auto" (Compose itself,
    # `docker compose config` or docker-compose, where installed; else the workbench's own reader), "compose"
    # or "builtin".
    "compose_resolver": "auto",
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
    secrets: tuple[str, ...] = field(default_factory=lambda: tuple(DEFAULTS["secrets"].split(",")))
    uid: str = ""
    gid: str = ""
    runtime: str = DEFAULTS["runtime"]
    python: str = ""
    builder: str = DEFAULTS["builder"]
    compose_resolver: str = DEFAULTS["compose_resolver"]

    def __post_init__(self) -> None:
        """Config values of the wrong type stop here, where they are read, with the key to fix: a YAML
        number where a path or name belongs, a UID that is not a number."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "root":
                continue
            if f.name == "secrets":
                if not all(isinstance(v, str) and v.strip() for v in value):
                    raise WorkbenchError(f"config workbench.secrets is {list(value)!r}: give variable names, "
                                         "e.g. secrets: HF_TOKEN,WANDB_API_KEY (or a YAML list of names)")
                continue
            if not isinstance(value, str):
                kind = "a number" if isinstance(value, int | float) else type(value).__name__
                raise WorkbenchError(f"config workbench.{f.name} is {value!r} ({kind}), not text: write it as a "
                                     f"string in invoke.yaml ({f.name}: \"{value}\"), e.g. "
                                     f"{f.name}: {DEFAULTS.get(f.name) or 'VALUE'}")
        for key in ("uid", "gid"):
            value = getattr(self, key)
            if value and not value.isdigit():
                raise WorkbenchError(f"config workbench.{key} is {value!r}, not a numeric id: set a number "
                                     f"(e.g. {key}: 1000) in invoke.yaml or INVOKE_WORKBENCH_{key.upper()}, or "
                                     "leave it empty for your own")

    @classmethod
    def from_mapping(cls, root: Path | str, values: dict[str, Any] | None = None) -> Settings:
        """Build settings from a config mapping (e.g. ``ctx.config.workbench``), ignoring unknown keys."""
        known = {f.name for f in fields(cls)} - {"root"}
        kwargs = {k: v for k, v in dict(values or {}).items() if k in known and v is not None}
        if "secrets" in kwargs:
            secrets = kwargs["secrets"]
            if isinstance(secrets, str):
                kwargs["secrets"] = tuple(s.strip() for s in secrets.split(",") if s.strip())
            elif isinstance(secrets, list | tuple):
                kwargs["secrets"] = tuple(secrets)
            else:
                kwargs["secrets"] = (secrets,)
        # Keys a YAML file naturally writes as numbers (uid: 1000, gpus: 0, tag: 2); a bool is no number.
        for key in ("uid", "gid", "gpus", "tag"):
            if isinstance(kwargs.get(key), int) and not isinstance(kwargs[key], bool):
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
    values = ctx.config.get("workbench", {})
    if not hasattr(values, "keys"):
        raise WorkbenchError(f"config workbench is {values!r}, not a mapping: in invoke.yaml, give its keys "
                             "indented under `workbench:` (e.g. `  image: vllm-workbench`)")
    values = dict(values)
    return Settings.from_mapping(values.pop("root", os.getcwd()), values)


PROJECT_CONFIG_FILES = ("invoke.yaml", "invoke.yml", "invoke.json")
ENV_PREFIX = "INVOKE_WORKBENCH_"


def config_problem(root: Path | str, environ: dict[str, str] | None = None) -> str | None:
    """Why invoke would stop with a traceback reading the project's config (see project_config_problem and
    environment_problem), as one "error: ..." line; None when it reads."""
    return project_config_problem(root) or environment_problem(root, environ)


def environment_problem(root: Path | str, environ: dict[str, str] | None = None) -> str | None:
    """invoke casts an INVOKE_WORKBENCH_* variable to the type the key already has (invoke.yaml's `uid: 4242`
    makes it int()) and lets the failure through as a traceback; say it in one line instead."""
    environ = os.environ if environ is None else environ
    values = {**DEFAULTS, **_project_workbench(root)}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        current = values.get(key)
        if isinstance(current, bool) or current is None or isinstance(current, str):
            continue
        try:
            type(current)(text) if isinstance(current, int | float) else None
        except ValueError:
            return (f"error: {name}={text!r} cannot replace {key}: {current!r} from invoke.yaml (not a number): "
                    f"give a number, or unset {name}")
        if isinstance(current, list | dict):
            return (f"error: {name} cannot replace {key} (a {type(current).__name__} in invoke.yaml): set it in "
                    f"invoke.yaml, or write it there as text ({key}: \"a,b\")")
    return None


def _project_workbench(root: Path | str) -> dict:
    import yaml

    for name in PROJECT_CONFIG_FILES:
        path = Path(root) / name
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text())  # JSON is YAML too
            except (OSError, yaml.YAMLError):
                return {}
            section = data.get("workbench") if isinstance(data, dict) else None
            return section if isinstance(section, dict) else {}
    return {}


def project_config_problem(root: Path | str) -> str | None:
    """Why invoke would fail to read the project's config file (invoke.yaml), as one "error: ..." line;
    None when it reads. invoke loads that file after importing tasks.py and lets a YAML error through as a
    traceback, even for `invoke --list`; tasks.py asks here first and exits with this line instead."""
    import json

    import yaml

    for name in PROJECT_CONFIG_FILES:
        path = Path(root) / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
            data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError) as err:
            return f"error: cannot read {path} ({err}): fix its permissions or encoding"
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            where = ""
            mark = getattr(err, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            elif isinstance(err, json.JSONDecodeError):
                where = f" at line {err.lineno}, column {err.colno}"
            problem = getattr(err, "problem", None) or getattr(err, "msg", None) or str(err).splitlines()[0]
            return (f"error: {path} is not valid {'JSON' if name.endswith('.json') else 'YAML'}{where} ({problem}): "
                    "fix that line (keys are `name: value`, nested keys indented with spaces, no tabs)")
        if data is not None and not isinstance(data, dict):
            return f"error: {path} holds a {type(data).__name__}, not a mapping: start it with `workbench:`"
        section = (data or {}).get("workbench")
        if section is not None and not isinstance(section, dict):
            return (f"error: {path}: workbench is {section!r}, not a mapping: indent its keys under "
                    "`workbench:` (e.g. `  image: vllm-workbench`)")
        return None
    return None
