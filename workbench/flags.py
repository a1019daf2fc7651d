"""Numbers given on the command line. invoke hands task bodies text (or casts with int(), which ends in a
traceback on "abc"), so numeric flags are declared as text and parsed here: a bad value is one line that
names the flag, what it got and what it takes, raised before the task changes anything."""

from __future__ import annotations

import math

from workbench.errors import WorkbenchError


def _number(flag: str, value: object, kind: type, example: str) -> int | float:
    text = str(value).strip()
    try:
        number = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise WorkbenchError(f"{flag} {value!r} is not {what}: give {what}, e.g. {flag} {example}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise WorkbenchError(f"{flag} {value!r} is not a finite number: give one, e.g. {flag} {example}")
    return number


def _check_range(flag: str, value: object, number: float, minimum: float | None, maximum: float | None,
                 above: float | None, example: str) -> None:
    if above is not None and number <= above:
        raise WorkbenchError(f"{flag} {value!r} must be greater than {above:g}: e.g. {flag} {example}")
    if minimum is not None and number < minimum:
        raise WorkbenchError(f"{flag} {value!r} must be at least {minimum:g}: e.g. {flag} {example}")
    if maximum is not None and number > maximum:
        raise WorkbenchError(f"{flag} {value!r} must be at most {maximum:g}: e.g. {flag} {example}")


def integer(flag: str, value: object, *, minimum: int | None = None, maximum: int | None = None,
            example: str = "1") -> int | None:
    """``value`` (text from invoke, or None when the flag was not given) as an int within the bounds."""
    if value is None:
        return None
    number = int(_number(flag, value, int, example))
    _check_range(flag, value, number, minimum, maximum, None, example)
    return number


def real(flag: str, value: object, *, minimum: float | None = None, maximum: float | None = None,
         above: float | None = None, example: str = "1") -> float | None:
    """``value`` as a finite float within the bounds (``above``: strictly greater than); None stays None."""
    if value is None:
        return None
    number = float(_number(flag, value, float, example))
    _check_range(flag, value, number, minimum, maximum, above, example)
    return number


def integer_list(flag: str, value: object, *, minimum: int = 1, example: str = "1,16,256") -> list[int] | None:
    """A comma-separated list of whole numbers (e.g. M buckets), each at least ``minimum``."""
    if value is None or str(value).strip() == "":
        return None
    items = [part.strip() for part in str(value).split(",")]
    numbers = []
    for item in items:
        if not item.lstrip("-").isdigit():
            raise WorkbenchError(f"{flag} {value!r}: {item!r} is not a whole number: give comma-separated "
                                 f"numbers, e.g. {flag} {example}")
        number = int(item)
        if number < minimum:
            raise WorkbenchError(f"{flag} {value!r}: {number} is below {minimum}: e.g. {flag} {example}")
        numbers.append(number)
    return numbers
