"""Create the host folders the compose files bind, as the user, before the container exists.

Docker creates a missing bind-mount source as root, and a root-owned results/ or HF cache is then not
writable for the container's user. `invoke up` and the devcontainer's initializeCommand both create them
here first. The initializeCommand runs on the host with a bare ``python3 -S`` (no PyYAML, no workbench
installed), so the compose files' mounts are read with the standard library: the short
``SOURCE:TARGET[:MODE]`` entries of every volumes list below the top level, interpolated and resolved by
compose.py's own rules. An entry this reader does not understand is an error, never skipped.

    python3 -S -m workbench.container.host_folders .devcontainer/devcontainer.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from workbench.container import compose
from workbench.errors import WorkbenchError

_VOLUMES_KEY = re.compile(r"^(?P<indent>[ ]+)volumes:(?P<rest>.*)$")
_ITEM = re.compile(r"^(?P<indent>[ ]*)- (?P<item>.*)$")
_MAPPING_KEY = re.compile(r"^[\w.-]+:(\s|$)")


def compose_files(config: Path) -> list[Path]:
    """The compose files a devcontainer.json names (``dockerComposeFile``), resolved from its folder."""
    try:
        # devcontainer.json is JSONC; ours keeps its comments on lines of their own.
        text = "\n".join(ln for ln in config.read_text().splitlines() if not ln.lstrip().startswith("//"))
        files = json.loads(text).get("dockerComposeFile")
    except (OSError, ValueError, AttributeError) as err:
        raise WorkbenchError(f"cannot read {config} ({err})",
                             fix="give the path of a devcontainer.json (comments on lines of their own)") from err
    if not files:
        raise WorkbenchError(f"{config} names no dockerComposeFile", fix="point it at ../docker-compose.yml")
    return [(config.parent / f).resolve() for f in ([files] if isinstance(files, str) else files)]


def volume_entries(text: str, where: str) -> list[str]:
    """The short-syntax entries of every volumes list below the top level (the top-level ``volumes:``
    declares named volumes, not mounts)."""
    entries: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        key = _VOLUMES_KEY.match(line)
        if not key:
            continue
        rest = key["rest"].split(" #")[0].strip()
        if rest and not rest.startswith("#"):
            raise WorkbenchError(f"{where} line {number + 1}: volumes: {rest} is not read on the host",
                                 fix="write the list one `- SOURCE:TARGET` entry per line")
        depth = len(key["indent"])
        for offset, inner in enumerate(lines[number + 1:], start=number + 2):
            if not inner.strip() or inner.lstrip().startswith("#"):
                continue
            if len(inner) - len(inner.lstrip()) <= depth:
                break
            item = _ITEM.match(inner)
            entry = _unquote(item["item"]) if item else ""
            if not entry or entry[0] in "*&!{[|>" or _MAPPING_KEY.match(entry):
                raise WorkbenchError(f"{where} line {offset}: {inner.strip()!r} is not a short-syntax volume, "
                                     "which the devcontainer's host-folder step reads",
                                     fix="write it as `- SOURCE:TARGET[:MODE]`")
            entries.append(entry)
    return entries


def _unquote(item: str) -> str:
    item = item.strip()
    if item[:1] in ("'", '"'):
        end = item.find(item[0], 1)
        return item[1:end] if end > 0 else ""
    return item.split(" #")[0].strip()


def bind_sources(files: list[Path], environ: Mapping[str, str]) -> list[Path]:
    """The host folders the compose files bind, interpolated with ``environ`` as Compose does; relative
    sources resolve from the first file's folder (Compose's project directory), in every file."""
    base = files[0].parent
    found: dict[Path, None] = {}
    for path in files:
        try:
            text = path.read_text()
        except OSError as err:
            raise WorkbenchError(f"cannot read {path} ({err.strerror})", fix="restore the compose file") from err
        for entry in volume_entries(text, path.name):
            source, _, _, kind = compose.split_short(compose.interpolate(entry, dict(environ), path.name), path.name)
            if kind == "bind":
                found[Path(compose.host_path(source, base))] = None
    return list(found)


def make_folders(paths: Iterable[Path]) -> list[Path]:
    """Create the missing ones (with their missing parents); the folders that exist are left alone.

    Made by a normal user, they are that user's. Made by root (sudo, CI), each takes the owner of the
    nearest folder that existed: Docker would make them root's, which the container's user cannot write."""
    made = []
    for path in paths:
        if path.is_dir():
            continue
        missing = [p for p in (path, *path.parents) if not p.exists()]
        anchor = path.parents[len(missing) - 1] if missing else path.parent
        try:
            try:
                path.mkdir(parents=True)
            except FileExistsError:  # another `invoke up` made it meanwhile: theirs, as it would have been ours
                if path.is_dir():
                    continue
                raise
            if os.geteuid() == 0:
                owner = anchor.stat()
                for folder in missing:
                    os.chown(folder, owner.st_uid, owner.st_gid)
        except OSError as err:
            raise WorkbenchError(f"cannot create the bind-mount source {path} ({err.strerror})",
                                 fix=f"create it yourself (mkdir -p {path}) or point its variable elsewhere") from err
        made.append(path)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a devcontainer.json; its dockerComposeFile lists the compose files")
    args = parser.parse_args(argv)
    try:
        files = compose_files(args.config)
        try:  # the project's .env below the environment, as Compose reads it (python-dotenv, if this python has it)
            environ = {**compose.project_env(files[0]), **os.environ} if files else dict(os.environ)
        except ImportError:
            environ = dict(os.environ)
            print(f"note: {files[0].parent / '.env'} not read (python-dotenv is not installed for {sys.executable})",
                  file=sys.stderr)
        sources = bind_sources(files, environ)
        made = make_folders(sources)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in made:
        stat = path.stat()
        print(f"host folder created: {path} (owner {stat.st_uid}:{stat.st_gid})")
    print(f"host folders: {len(made)} created, {len(sources) - len(made)} existed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
