"""Patch series of the GEMM hook, one per vLLM release, and which release a fork is.

A series is ``patches/<vllm-version>/series`` (one patch file name per line, ``#`` comments) plus git
format-patch files (written by ``invoke patch.refresh``). The release of a fork is read from the fork
itself: its nearest ``v*`` tag, else setuptools-scm's ``vllm/_version.py``, else the sdist's PKG-INFO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.fork import checkout
from workbench.git import run as _git

RELEASE = re.compile(r"\d+\.\d+\.\d+")  # how vLLM numbers its releases, and so the series folders


@dataclass(frozen=True)
class Patch:
    """One patch of a series: its file and the repository paths it touches."""

    name: str
    path: Path
    files: tuple[str, ...]

    @property
    def subject(self) -> str:
        """The format-patch subject line (what the patch does), unfolded: a long one continues on lines
        that start with whitespace."""
        lines = self.path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Subject:"):
                for more in lines[i + 1:]:
                    if not more.startswith((" ", "\t")):
                        break
                    line += more
                return re.sub(r"^Subject:\s*(\[PATCH[^\]]*\]\s*)?", "", line)
        return self.name


@dataclass(frozen=True)
class Series:
    version: str
    directory: Path
    patches: tuple[Patch, ...]

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted({f for p in self.patches for f in p.files}))


def available_series(patches_root: Path) -> list[str]:
    """Versions that have a series file under ``patches_root``, oldest first."""
    from packaging.version import InvalidVersion, Version

    found = [d.name for d in Path(patches_root).glob("*") if (d / "series").is_file()]

    def key(v: str):
        try:
            return (0, Version(v))
        except InvalidVersion:
            return (1, v)

    return sorted(found, key=key)


def patch_files(patch: Path) -> tuple[str, ...]:
    """Repository paths a git patch touches (both sides of a rename), from its diff headers."""
    files: list[str] = []
    for line in patch.read_text(errors="replace").splitlines():
        m = re.match(r"^(?:---|\+\+\+) (?:[ab]/)?(.+?)\t?$", line)
        if m and m.group(1) != "/dev/null":
            files.append(m.group(1))
        m = re.match(r"^(?:rename|copy) (?:from|to) (.+)$", line)
        if m:
            files.append(m.group(1))
    return tuple(dict.fromkeys(files))


def check_release(version: str, patches_root: Path) -> str:
    """``version`` when it is a release number X.Y.Z, the name of a folder under patches/ (so --series
    can't name a path elsewhere, e.g. ``../x``); else one line with the choices."""
    if RELEASE.fullmatch(str(version)):
        return str(version)
    have = ", ".join(available_series(patches_root)) or "none yet"
    raise WorkbenchError(f"--series {version!r} is not a vLLM release number: give X.Y.Z (series here: {have})")


def load_series(patches_root: Path, version: str) -> Series:
    """Read ``patches/<version>/series``; a missing series or patch file is one line with the fix."""
    directory = Path(patches_root) / check_release(version, patches_root)
    series_file = directory / "series"
    if not series_file.is_file():
        have = ", ".join(available_series(patches_root)) or "none"
        raise WorkbenchError(f"no patch series for vLLM {version} (have: {have}): pass --series VERSION, "
                             f"or create patches/{version}/ with `invoke patch.refresh --series {version}`")
    patches = []
    for raw in series_file.read_text().splitlines():
        name = raw.split("#", 1)[0].strip()
        if not name:
            continue
        path = directory / name
        if not path.is_file():
            raise WorkbenchError(f"{series_file} lists {name}, which is missing: restore it or remove the line")
        files = patch_files(path)
        if not files:
            raise WorkbenchError(f"{path} is not a git patch (no diff headers): regenerate it with "
                                 "`invoke patch.refresh`")
        patches.append(Patch(name=name, path=path, files=files))
    return Series(version=version, directory=directory, patches=tuple(patches))


def detect_version(fork: Path) -> tuple[str, str]:
    """The vLLM release the fork is based on, and where that was read: the nearest ``v*`` release tag,
    else setuptools-scm's ``vllm/_version.py``, else the sdist's PKG-INFO."""
    fork = Path(fork)
    if checkout.head(fork) is not None:  # not the tags of a project the folder happens to sit in
        result = _git(fork, "describe", "--tags", "--abbrev=0", "--match", "v[0-9]*.[0-9]*.[0-9]*",
                      "--exclude", "*rc*", "HEAD", check=False)
        tag = result.stdout.decode().strip()
        if result.returncode == 0 and RELEASE.fullmatch(tag[1:]):
            return tag[1:], f"git tag {tag}"
    version_py = fork / "vllm" / "_version.py"
    if version_py.is_file():
        m = re.search(r"^__version__\s*=\s*(?:version\s*=\s*)?['\"]([^'\"]+)['\"]", version_py.read_text(), re.M)
        if m and RELEASE.fullmatch(m.group(1)):
            return m.group(1), "vllm/_version.py (setuptools-scm)"
    pkg_info = fork / "PKG-INFO"
    if pkg_info.is_file():
        m = re.search(r"^Version:\s*(\d+\.\d+\.\d+)\s*$", pkg_info.read_text(errors="replace"), re.M)
        if m:
            return m.group(1), "PKG-INFO"
    raise WorkbenchError(
        f"cannot tell which vLLM release {fork} is based on (no v<X.Y.Z> tag reachable from HEAD, "
        f"no release version in vllm/_version.py or PKG-INFO): fetch the tags (`git -C {fork} fetch --tags`) "
        f"or pass --series VERSION")


def resolve_series(fork: Path, patches_root: Path, version: str | None = None) -> Series:
    """The series for ``version`` or, when None, for the fork's detected release."""
    if version is None:
        version, source = detect_version(fork)
        if not (Path(patches_root) / version / "series").is_file():
            have = ", ".join(available_series(patches_root)) or "none"
            raise WorkbenchError(f"the fork is vLLM {version} ({source}) and there is no patches/{version}/series "
                                 f"(have: {have}): pass --series VERSION to try another, or port one "
                                 f"and save it with `invoke patch.refresh`")
    return load_series(patches_root, version)


