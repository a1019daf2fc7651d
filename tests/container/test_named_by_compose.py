"""The dev container's name comes from docker-compose.yml alone, and each container task connects once.

In a project whose compose file names the container something other than workbench.container, `up`,
`shell`, `status`, `commit`, `down` and the install's image check all act on the compose file's name (a
container of the settings' name never appears), and each task opens one docker client and looks the
container up once (real daemon, real CLI, then the task bodies in-process to count)."""

from __future__ import annotations

import pytest
import yaml

from support.docker_fixtures import DEV_IMAGE
from workbench.container import labels, lifecycle
from workbench.container.daemon import find_container

pytestmark = pytest.mark.docker

DECLARED = "container_name: ${WORKBENCH_CONTAINER:-vllm-workbench}"


@pytest.fixture
def renamed(project):
    """The project, its compose file naming the container <project>-spec (the fixture's cleanup, by the
    project's name, still finds it)."""
    compose_file = project.root / "docker-compose.yml"
    text = compose_file.read_text()
    assert DECLARED in text, "docker-compose.yml no longer names the container this way: update this test"
    name = f"{project.name}-spec"
    compose_file.write_text(text.replace(DECLARED, f"container_name: {name}"))
    assert project.settings.container != name
    return project, name


def test_every_task_acts_on_the_compose_files_name(renamed, docker_client):
    project, name = renamed
    settings = project.settings
    assert f"created container {name} " in project.invoke("up", check=True).stdout
    container = docker_client.containers.get(name)
    assert lifecycle.installed_image(docker_client, settings) == container.image.id

    shell = project.invoke("shell", "--cmd", "hostname; exit 3")
    assert shell.returncode == 3 and shell.stdout.strip() == container.id[:12], shell.stderr

    status = project.invoke("status", check=True).stdout
    assert f"container {name}: running" in status and "differs from" not in status

    tag = f"named-{project.name}"
    project.invoke("commit", "--tag", tag, check=True)
    assert docker_client.images.get(f"{DEV_IMAGE}:{tag}").labels[labels.COMMITTED_FROM] == container.id

    assert f"removed container {name}" in project.invoke("down", check=True).stdout
    assert find_container(docker_client, name) is None
    assert f"container {name}: none" in project.invoke("status", check=True).stdout
    assert f"no container {name}" in project.invoke("down", check=True).stdout
    assert find_container(docker_client, settings.container) is None  # the settings' name never existed


def test_each_container_task_connects_once_and_looks_the_container_up_once(renamed, monkeypatch, capsys):
    import docker
    from docker.models.containers import ContainerCollection
    from invoke import Config, Context

    from workbench.tasks import container as tasks

    project, name = renamed
    connects: list[int] = []
    lookups: list[str] = []
    from_env, get = docker.from_env, ContainerCollection.get

    def counted_from_env(*args, **kwargs):
        connects.append(1)
        return from_env(*args, **kwargs)

    def counted_get(self, key):
        lookups.append(key)
        return get(self, key)

    monkeypatch.setattr(docker, "from_env", counted_from_env)
    monkeypatch.setattr(ContainerCollection, "get", counted_get)
    values = yaml.safe_load((project.root / "invoke.yaml").read_text())["workbench"]
    ctx = Context(Config(overrides={"workbench": {**values, "root": str(project.root)}}))

    def calls(task, **kwargs) -> tuple[int, int]:
        connects.clear()
        lookups.clear()
        task(ctx, **kwargs)
        return len(connects), lookups.count(name)

    assert calls(tasks.up) == (1, 1)  # creates
    assert calls(tasks.up) == (1, 1)  # reuses
    assert calls(tasks.status) == (1, 1)  # the drift check reuses the container status found
    assert calls(tasks.shell, cmd="true") == (1, 1)
    assert calls(tasks.commit, tag=f"once-{project.name}") == (1, 1)
    assert calls(tasks.down) == (1, 1)
    out = capsys.readouterr().out
    assert f"created container {name}" in out and f"reused container {name}" in out
    assert f"removed container {name}" in out
