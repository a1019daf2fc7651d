"""The dev container's places and path mapping come from the real docker-compose.yml (no daemon needed):
no second list of container paths, and a compose file that drops a mount is refused in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from workbench.config import Settings
from workbench.container import compose
from workbench.container.places import IMAGE_STATE, MountMap, container_places
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]


def test_container_places_come_from_the_compose_file(tmp_path):
    settings = Settings.from_mapping(ROOT, {"fork": str(tmp_path / "fork"), "results": str(tmp_path / "r")})
    spec = compose.load_spec(settings, "none")
    places = container_places(settings, spec)
    assert (places.fork, places.results) == ("/workspace/vllm", "/workspace/results")
    assert places.wheels == "/workspace/wheels"
    assert places.guest == "/opt/workbench-src/workbench/guest" and places.kernels == "/workspace/custom_kernels"
    assert places.install_record == "/opt/workbench/install.json" and places.ccache == "/cache/ccache"
    mounts = MountMap.of(spec)
    assert mounts.to_host("/workspace/results/S/env.json") == tmp_path / "r" / "S" / "env.json"
    assert mounts.from_host(tmp_path / "fork" / "x" / "y.py") == "/workspace/vllm/x/y.py"
    assert mounts.from_host(tmp_path / "elsewhere.whl") is None
    with pytest.raises(WorkbenchError, match="not in a folder the dev container mounts"):
        mounts.to_host("/etc/passwd")


def test_a_compose_file_without_the_results_mount_is_refused_in_one_line(tmp_path):
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for svc in ("dev", "dev-cpu"):
        volumes = doc["services"][svc].get("volumes") or doc["x-dev"]["volumes"]
        # The checkout's folders by absolute path: this file lives elsewhere.
        doc["services"][svc]["volumes"] = [v.replace("./", f"{ROOT}/", 1) if v.startswith("./") else v
                                           for v in volumes if "WORKBENCH_RESULTS" not in v]
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(doc))
    settings = Settings.from_mapping(ROOT, {"compose_file": str(tmp_path / "compose.yml")})
    with pytest.raises(WorkbenchError, match="mounts no results folder"):
        container_places(settings, compose.load_spec(settings, "none"))


def test_the_install_record_lives_in_the_image_where_dockerfile_makes_room(tmp_path):
    """The record is in the image, not a mount, so `invoke commit` keeps it with the build it describes;
    Dockerfile.dev creates that folder for the image's user, who writes the record."""
    settings = Settings.from_mapping(ROOT, {"fork": str(tmp_path / "fork")})
    spec = compose.load_spec(settings, "none")
    record = container_places(settings, spec).install_record
    assert record.startswith(IMAGE_STATE + "/")
    assert not [m.target for m in spec.mounts if record.startswith(m.target.rstrip("/") + "/")]
    dockerfile = (ROOT / "Dockerfile.dev").read_text().replace("\\\n", " ")
    made = [arg for line in re.findall(r"mkdir -p ([^&\n]+)", dockerfile) for arg in line.split()]
    owned = [arg for line in re.findall(r"chown -R \S+ ([^&\n]+)", dockerfile) for arg in line.split()]
    assert IMAGE_STATE in made and IMAGE_STATE in owned
