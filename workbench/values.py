"""Task flags given as text: numbers checked and converted with a one-line error that names the flag.

invoke converts a flag by its default's type and lets a bad value escape as a traceback; flags that
take numbers default to None and come through here instead.
"""

from __future__ import annotations

from workbench.errors import WorkbenchError


def as_int(flag: str, value: object, default: int, minimum: int | None = None) -> int:
    """``value`` (None: ``default``) as an int >= ``minimum``."""
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise WorkbenchError(f"{flag} {value!r} is not a whole number: give one like {default}") from None
    if minimum is not None and number < minimum:
        raise WorkbenchError(f"{flag} must be >= {minimum}, got {number}")
    return number


def as_float(flag: str, value: object, default: float, minimum: float | None = None,
             maximum: float | None = None) -> float:
    """``value`` (None: ``default``) as a float within [minimum, maximum]."""
    if value is None or value == "":
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        raise WorkbenchError(f"{flag} {value!r} is not a number: give one like {default}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if minimum is not None and maximum is not None else (
            f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise WorkbenchError(f"{flag} must be {bounds}, got {number}")
    return number
