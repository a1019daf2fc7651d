"""The `workbench.*` labels have one home (workbench/container/labels.py): Dockerfile.dev and
docker-compose.yml write the same keys, and no other module spells a key out."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

from workbench.config import Settings
from workbench.container import compose, labels

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_labels(text: str) -> dict[str, str]:
    """The LABEL instructions' key=value pairs (continuation lines joined, quotes removed)."""
    joined = text.replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in re.findall(r"^LABEL\s+(.+)$", joined, re.M):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            found[key] = value
    return found


def test_dockerfile_labels_the_dev_image_with_the_modules_keys():
    written = dockerfile_labels((ROOT / "Dockerfile.dev").read_text())
    assert set(written) == set(labels.DEV_IMAGE)
    assert written[labels.ROLE] == labels.ROLE_DEV


def test_dockerfile_label_parsing_sees_a_drifted_key():
    """The check above can fail: a renamed key in a continuation line is seen."""
    written = dockerfile_labels('LABEL workbench.role="dev" \\\n      workbench.user-id="${USER_UID}"\n')
    assert set(written) == {labels.ROLE, "workbench.user-id"} and set(written) != set(labels.DEV_IMAGE)


def test_the_compose_file_marks_both_services_managed(tmp_path):
    settings = Settings.from_mapping(ROOT, {"fork": str(tmp_path / "fork")})
    for gpus in ("all", "none"):
        assert compose.load_spec(settings, gpus).labels.get(labels.MANAGED) == "true"


def _spelled_out(path: Path) -> list[str]:
    keys = set(labels.ALL)
    return [f"{path}:{node.lineno}: {node.value!r}"
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in keys]


def test_no_module_but_labels_spells_out_a_label_key():
    home = ROOT / "workbench" / "container" / "labels.py"
    files = [p for folder in ("workbench", "tests", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))
             if p != home]
    assert len(files) > 50
    assert [hit for path in files for hit in _spelled_out(path)] == []


def test_the_scan_finds_a_spelled_out_key(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(f'SPEC = "{labels.SPEC}"\nMODULE = "{labels.PREFIX}trace"\nNOTE = f"{labels.TAG}"\n')
    assert len(_spelled_out(probe)) == 2  # the key, alone or in an f-string without placeholders
