"""Tasks for the dev image and container: build, up, shell, down, commit, status."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from workbench.config import settings_from_context
from workbench.errors import WorkbenchError
from workbench.gpu_selection import parse_gpu_selection


@task(help={
    "base-image": "Base image to build on (default: workbench.base_image, else vllm/vllm-openai:v<the fork's release>)",
    "tag": "Tag of the dev image (default: workbench.tag); the image is <workbench.image>:<tag>",
    "no-cache": "Rebuild every layer instead of reusing the build cache",
    "ca-certs": "Folder of extra CA certificates (*.crt) to trust for apt and pip inside the build",
    "allow-torch-mismatch": "Build even when the base image's torch is not the one the fork's requirements pin",
    "dry-run": "Print what would be built, build nothing",
})
def build(ctx, base_image=None, tag=None, no_cache=False, ca_certs=None, allow_torch_mismatch=False, dry_run=False):
    """Build the dev image from Dockerfile.dev (streamed; on failure: the failing step and log tail)."""
    from workbench.container import daemon, images, versions
    from workbench.ui import console, print_build_failure

    settings = settings_from_context(ctx).with_overrides(base_image=base_image, tag=tag, ca_certs=ca_certs)
    plan, files = images.plan_build(settings, no_cache=no_cache)
    if dry_run:
        console.print(f"base image: {plan.base_image} ({plan.base_reason})", markup=False)
        console.print(f"would run: {plan.describe()}")
        return
    client = daemon.connect()
    check, torch = versions.check_base_image(client, plan.base_image, settings.fork_path)
    if not check.ok and not allow_torch_mismatch:
        raise WorkbenchError(check.message, fix=versions.torch_fix(settings.fork_path, plan.base_image, "build"))
    console.print(check.message, style="yellow" if not check.ok else "dim", markup=False)
    plan = plan.with_base_torch(torch)
    console.print(f"building [bold]{plan.tag}[/] on {plan.base_image} ({plan.base_reason}; "
                  f"uid {plan.buildargs['USER_UID']})")
    try:
        image_id = images.build(client, plan, files, on_line=lambda line: console.print(line, style="dim",
                                                                                         markup=False, highlight=False))
    except images.BuildFailed as err:
        print_build_failure(err.log_tail)
        raise
    console.print(f"[green]built[/] {plan.tag} ({image_id[:19]})")


@task(help={
    "gpus": "GPUs for the container: all, none (CPU-only variant) or indices like 0,1 (default: workbench.gpus)",
    "recreate": "Recreate a drifted container even if its filesystem holds changes (commit them first!)",
    "dry-run": "Say what would happen, change nothing",
})
def up(ctx, gpus=None, recreate=False, dry_run=False):
    """Create/start the dev container exactly as docker-compose.yml declares it (idempotent)."""
    from workbench.container import daemon, lifecycle
    from workbench.ui import console

    settings = settings_from_context(ctx).with_overrides(gpus=gpus)
    parse_gpu_selection(settings.gpus)
    result = lifecycle.up(daemon.connect(), settings, recreate=recreate, dry_run=dry_run)
    console.print(f"{result.action} container [bold]{result.name}[/] (service {result.service}) "
                  f"from image [bold]{result.image}[/]: {result.image_reason}")


@task(help={
    "cmd": "Run this command (bash -lc) instead of an interactive shell; exits with its exit code",
    "gpus": "GPUs if the container must be created: all, none or indices like 0,1 (default: workbench.gpus)",
})
def shell(ctx, cmd=None, gpus=None):
    """Open a shell in the dev container (starting it if needed), or run one command there."""
    from workbench.container import devcontainer

    settings = settings_from_context(ctx).with_overrides(gpus=gpus)
    parse_gpu_selection(settings.gpus)
    code = devcontainer.shell(settings, cmd)
    if code:
        raise Exit(code=code)


@task(help={
    "volumes": "Also remove the container's named volumes (the ccache volume); host folders are never touched",
    "dry-run": "Say what would be removed, remove nothing",
})
def down(ctx, volumes=False, dry_run=False):
    """Remove the dev container; volumes (ccache) survive unless --volumes."""
    from workbench.container import daemon, lifecycle
    from workbench.ui import console

    settings = settings_from_context(ctx)
    result = lifecycle.down(daemon.connect(), settings, volumes=volumes, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} container {result.name}" if result.removed else f"no container {result.name}")
    if result.volumes_removed:
        console.print(f"{verb} volume(s): {', '.join(result.volumes_removed)}")
    if result.kept:
        console.print(f"kept volume(s): {', '.join(result.kept)} (--volumes removes them)")


@task(help={
    "tag": "Tag for the committed image (default: <workbench.tag>-compiled)",
    "dry-run": "Print the image name and provenance labels, commit nothing",
})
def commit(ctx, tag=None, dry_run=False):
    """Commit the dev container (installed/compiled state) as an image with provenance labels."""
    from workbench.container import daemon, lifecycle
    from workbench.ui import console

    settings = settings_from_context(ctx)
    result = lifecycle.commit(daemon.connect(), settings, tag=tag, dry_run=dry_run)
    console.print(("would commit " if dry_run else "committed ") + f"[bold]{result.ref}[/] {result.image_id[:19]}")
    for key, value in sorted(result.labels.items()):
        console.print(f"  {key} = {value}", markup=False, highlight=False)


@task(help={"json": "Print one JSON document (the same facts) on stdout instead of the text"})
def status(ctx, json=False):
    """Show the dev image, the container, committed images (with provenance) and the GPU runtime."""
    from workbench.container import daemon
    from workbench.container import status as status_mod
    from workbench.ui import print_json, print_status

    settings = settings_from_context(ctx)
    client = daemon.connect()
    state = status_mod.collect(client, settings)
    drift = status_mod.drift(client, settings, state)
    if json:
        print_json(state.to_dict(drift))
    else:
        print_status(settings, state, drift)


TASKS = [build, up, shell, down, commit, status]
