"""One error type for everything the user can fix, and the task-side wrapper that turns it into
one line on stderr and a non-zero exit (no traceback)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class WorkbenchError(Exception):
    """A failure the user can act on; str() is one line saying what is wrong and what to do.

    Either one text ("what is wrong: what to do"), or the two parts (``fix=``) for callers that show them
    apart (doctor's detail and fix columns), since a part may itself hold colons (unix:///...)."""

    exit_code = 1

    def __init__(self, what: str, fix: str | None = None):
        super().__init__(f"{what}: {fix}" if fix else what)
        self.what = what if fix else None
        self.fix = fix

    def parts(self) -> tuple[str, str]:
        """(what is wrong, what to do); a one-text error splits at its first ': '."""
        if self.fix is not None:
            return self.what or "", self.fix
        what, _, fix = str(self).partition(": ")
        return what, fix


def user_errors(func: F) -> F:
    """Decorate an invoke task body so WorkbenchError (and docker's own errors) exit cleanly."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from invoke.exceptions import Exit

        try:
            return func(*args, **kwargs)
        except WorkbenchError as err:
            raise Exit(f"error: {err}", code=err.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None
        except Exception as err:  # docker SDK errors not mapped elsewhere still get one line
            from docker.errors import DockerException

            if isinstance(err, DockerException):
                raise Exit(f"error: Docker: {_first_line(err)}", code=1) from None
            raise

    return wrapper  # type: ignore[return-value]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
