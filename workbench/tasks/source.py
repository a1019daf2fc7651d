"""`invoke source`: show the vLLM fork (version, commit, branch, dirty files, patches, matching wheel),
or switch it to another fork URL / ref."""

from __future__ import annotations

from invoke import task
from rich.markup import escape
from rich.table import Table

from workbench import ui
from workbench.config import settings_from_context
from workbench.fork import source as src


def _shown(paths: tuple[str, ...], limit: int = 10) -> str:
    more = f" (+{len(paths) - limit} more)" if len(paths) > limit else ""
    return escape(", ".join(paths[:limit]) + more) or "none"


@task(help={
    "fork": "switch to this fork URL (the submodule: recorded in .gitmodules); needs network for remote URLs",
    "ref": "with or without --fork: fetch this branch / tag / commit and check it out (detached)",
    "json": "print one JSON document (the same facts) on stdout instead of the table",
})
def source(c, fork=None, ref=None, json=False):
    """Show the vLLM fork's state, or switch it (--fork URL --ref REF) without losing local work."""
    settings = settings_from_context(c)
    console = ui.err_console if json else ui.console  # with --json, stdout holds the document alone
    path = settings.fork_path
    if fork or ref:
        head = src.switch_fork(settings.root, path, fork, ref)
        if src.is_project_submodule(settings.root, path):
            console.print(f"fork now at {head[:12]}; record it in the project: "
                          f"git add .gitmodules {settings.fork} && git commit -m 'vllm: switch fork'")
        else:
            console.print(f"fork now at {head[:12]} (your checkout at {path}; the project's .gitmodules is "
                          "untouched)")
    info = src.source_info(settings.root, path, settings.wheels_path)
    if json:
        ui.print_json(info.to_dict())
        return
    state = info.state
    table = Table(title=f"vLLM fork ({state.path})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("url", f"{info.url}  ({info.url_source})" if info.url else
                  "(no remote)" if info.url_source != ".gitmodules" and not info.pinned else "(no .gitmodules entry)")
    table.add_row("version", f"{info.version}  ({info.version_source})")
    pinned = "" if not info.pinned else (" = pinned" if info.pinned == state.commit else
                                        f"  (project pins {info.pinned[:12]}: `git add {settings.fork}` to record)")
    table.add_row("commit", f"{state.commit}{pinned}")
    table.add_row("branch", state.branch or "detached HEAD")
    table.add_row("dirty files", _shown(state.dirty_files))
    table.add_row("untracked files", _shown(state.untracked))
    table.add_row("patches applied", escape("\n".join(state.patches)) or "none")
    table.add_row("precompiled wheel", escape(info.wheel))
    console.print(table)


TASKS = [source]
