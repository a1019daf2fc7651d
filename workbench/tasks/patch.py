"""`invoke patch`: apply / check / revert / show / refresh the fork's GEMM-hook patch series."""

from __future__ import annotations

from invoke import Task, task
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.config import settings_from_context
from workbench.errors import WorkbenchError, user_errors
from workbench.fork import patches


class _PatchTask(Task):
    """Adds the `--3way` spelling (git's own) to the `three_way` flag; Python names can't start with a digit."""

    def get_arguments(self, ignore_unknown_help=None):
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            if arg.name == "three_way":
                arg.names = (*arg.names, "3way")
        return args


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


@task(klass=_PatchTask, help={
    "check": "only check: exit 1 (with the reason) unless the series is applied or applies cleanly; changes nothing",
    "revert": "remove the series' uncommitted patches from the fork (last first)",
    "status": "show each patch's state (committed / applied / pending / conflict) and your edits in patched files",
    "series": "series version under patches/ (default: the fork's vLLM release, from its tag or _version.py)",
    "three_way": "fall back to a 3-way merge (git apply --3way) when a patch does not apply exactly",
    "refresh": "rewrite patches/<version>/ from the fork's commits on top of tag v<version> (git format-patch)",
    "dry_run": "say what would be applied / reverted / written, change nothing",
})
@user_errors
def patch(c, check=False, revert=False, status=False, series=None, three_way=False, refresh=False, dry_run=False):
    """Apply the GEMM-hook patch series to the vLLM fork: idempotent, atomic, never fuzzy, never loses an edit."""
    settings = settings_from_context(c)
    console = Console()
    fork = patches.fork_toplevel(settings.fork_path)
    root = settings.root / "patches"
    if sum(bool(x) for x in (check, revert, status, refresh)) > 1:
        raise WorkbenchError("--check, --revert, --status and --refresh exclude each other: give one of them")
    if refresh:
        version = series or patches.detect_version(fork)[0]
        names = patches.refresh_series(fork, root, version, dry_run=dry_run)
        verb = "would write" if dry_run else "wrote"
        console.print(f"{verb} {len(names)} patch(es) to {root / version}:")
        for name in names:
            console.print(f"  {escape(name)}")
        return
    chosen = patches.resolve_series(fork, root, series)
    if status:
        version, source = patches.detect_version(fork) if series is None else (series, "--series")
        console.print(f"fork: {fork}  (vLLM {version}, from {source})")
        state = patches.series_state(fork, chosen)
        console.print(_status_table(state))
        if state.deleted:
            console.print(f"[red]deleted:[/red] {escape(patches.deleted_message(state))}")
        if state.conflict:
            console.print(f"[red]does not apply:[/red] {escape(state.conflict)}")
        if state.user_dirty:
            console.print(f"[yellow]your uncommitted edits in files the series touches:[/yellow] "
                          f"{', '.join(state.user_dirty)} (apply/revert leave those files alone and refuse "
                          f"if a patch needs them)")
        return
    if check:
        state = patches.check_series(fork, chosen)
        console.print(f"ok: {state.applied} of {len(chosen.patches)} patch(es) applied, "
                      f"{len(state.pending)} apply cleanly (vLLM {chosen.version})")
        return
    if revert:
        result = patches.revert_series(fork, chosen, dry_run=dry_run)
    else:
        result = patches.apply_series(fork, chosen, three_way=three_way, dry_run=dry_run)
    verb = {("apply", False): "applied", ("apply", True): "would apply",
            ("revert", False): "reverted", ("revert", True): "would revert"}[(result.action, dry_run)]
    if result.done:
        console.print(f"{verb} ({chosen.version}): " + ", ".join(result.done))
    else:
        console.print(f"nothing to do: series {chosen.version} is already "
                      f"{'applied' if result.action == 'apply' else 'reverted'}")
    if result.action == "revert" and result.skipped:
        console.print(f"[yellow]kept (committed in the fork's HEAD):[/yellow] {', '.join(result.skipped)}")
    if not dry_run:  # re-check state after acting
        state = patches.series_state(fork, chosen)
        console.print(_status_table(state))


TASKS = [patch]
