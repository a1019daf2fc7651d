"""patch.apply (`invoke patch`), patch.check, patch.revert, patch.status, patch.refresh: the fork's GEMM-hook
patch series (logic: workbench.fork.series, .patches, .refresh)."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Task, task
from rich.markup import escape
from rich.table import Table

from workbench import ui
from workbench.config import settings_from_context
from workbench.fork import patches
from workbench.fork.refresh import refresh_series
from workbench.fork.series import Series, detect_version, resolve_series
from workbench.fork.source import fork_state

SERIES_HELP = "series version under patches/ (default: the fork's vLLM release, from its tag or _version.py)"


class _ApplyTask(Task):
    """Adds the `--3way` spelling (git's own) to the `three_way` flag; Python names can't start with a digit."""

    def get_arguments(self, ignore_unknown_help=None):
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            if arg.name == "three_way":
                arg.names = (*arg.names, "3way")
        return args


def _fork_and_series(c, series: str | None) -> tuple[Path, Series]:
    settings = settings_from_context(c)
    fork = fork_state(settings.fork_path).require().path
    return fork, resolve_series(fork, settings.root / "patches", series)


def _status_table(state: patches.SeriesState) -> Table:
    table = Table(title=f"patch series for vLLM {state.series.version} ({state.series.directory})")
    for col in ("#", "patch", "state", "files"):
        table.add_column(col)
    colors = {patches.COMMITTED: "cyan", patches.APPLIED: "green", patches.PENDING: "yellow",
              patches.CONFLICT: "red", patches.UNKNOWN: "magenta", patches.DELETED: "red"}
    for i, (p, s) in enumerate(zip(state.series.patches, state.statuses, strict=True), 1):
        state_cell = f"[{colors[s]}]{s}[/{colors[s]}]"
        table.add_row(str(i), f"{escape(p.name)}\n[dim]{escape(p.subject)}[/dim]", state_cell, "\n".join(p.files))
    return table


def _report(result: patches.RunResult, fork: Path, chosen: Series) -> None:
    """What a run did, then the state as it is now (re-checked after acting)."""
    console = ui.console
    verb = {("apply", False): "applied", ("apply", True): "would apply",
            ("revert", False): "reverted", ("revert", True): "would revert"}[(result.action, result.dry_run)]
    if result.done:
        console.print(f"{verb} ({chosen.version}): " + ", ".join(result.done))
    else:
        console.print(f"nothing to do: series {chosen.version} is already "
                      f"{'applied' if result.action == 'apply' else 'reverted'}")
    if result.action == "revert" and result.skipped:
        console.print(f"[yellow]kept (committed in the fork's HEAD):[/yellow] {', '.join(result.skipped)}")
    if not result.dry_run:
        console.print(_status_table(patches.series_state(fork, chosen)))


@task(klass=_ApplyTask, help={
    "series": SERIES_HELP,
    "three_way": "fall back to a 3-way merge (git apply --3way) when a patch does not apply exactly",
    "dry_run": "say what would be applied, change nothing",
})
def apply(c, series=None, three_way=False, dry_run=False):
    """Apply the GEMM-hook patch series to the vLLM fork: idempotent, atomic, never fuzzy, never loses an edit."""
    fork, chosen = _fork_and_series(c, series)
    _report(patches.apply_series(fork, chosen, three_way=three_way, dry_run=dry_run), fork, chosen)


@task(help={"series": SERIES_HELP})
def check(c, series=None):
    """Exit 1 with the reason unless the series is applied or applies cleanly; changes nothing."""
    fork, chosen = _fork_and_series(c, series)
    state = patches.check_series(fork, chosen)
    ui.console.out(f"ok: {state.applied} of {len(chosen.patches)} patch(es) applied, "
          f"{len(state.pending)} apply cleanly (vLLM {chosen.version})")


@task(help={"series": SERIES_HELP, "dry_run": "say what would be reverted, change nothing"})
def revert(c, series=None, dry_run=False):
    """Remove the series' uncommitted patches from the fork, last first (atomic; keeps committed ones)."""
    fork, chosen = _fork_and_series(c, series)
    _report(patches.revert_series(fork, chosen, dry_run=dry_run), fork, chosen)


@task(help={"series": SERIES_HELP, "json": "print one JSON document (the same facts) on stdout instead of the table"})
def status(c, series=None, json=False):
    """Each patch's state (committed / applied / pending / conflict / unknown) and your edits in patched files."""
    fork, chosen = _fork_and_series(c, series)
    console = ui.console
    version, source = detect_version(fork) if series is None else (series, "--series")
    state = patches.series_state(fork, chosen)
    if json:
        ui.print_json({**state.to_dict(), "version": version, "version_source": source})
        return
    console.print(f"fork: {fork}  (vLLM {version}, from {source})")
    console.print(_status_table(state))
    if state.deleted:
        console.print(f"[red]deleted:[/red] {escape(patches.deleted_message(state))}")
    if state.conflict:
        console.print(f"[red]does not apply:[/red] {escape(state.conflict)}")
    if state.user_dirty:
        console.print(f"[yellow]your uncommitted edits in files the series touches:[/yellow] "
                      f"{', '.join(state.user_dirty)} (apply/revert leave those files alone and refuse "
                      f"if a patch needs them)")


@task(help={"series": "the release whose series to write (default: the fork's, from its tag or _version.py)",
            "dry_run": "list the commits that would be saved, write nothing"})
def refresh(c, series=None, dry_run=False):
    """Rewrite patches/<release>/ from the fork's commits on top of tag v<release> (git format-patch)."""
    settings = settings_from_context(c)
    fork = fork_state(settings.fork_path).require().path
    root = settings.root / "patches"
    version = series or detect_version(fork)[0]
    names = refresh_series(fork, root, version, dry_run=dry_run)
    ui.console.out(f"{'would write' if dry_run else 'wrote'} {len(names)} patch(es) to {root / version}:")
    for name in names:
        ui.console.out(f"  {name}")


ns = Collection("patch")
ns.add_task(apply, default=True)
ns.add_task(check)
ns.add_task(revert)
ns.add_task(status)
ns.add_task(refresh)
