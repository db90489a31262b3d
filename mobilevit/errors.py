"""The error a user can fix (:class:`UserInputError`: one line, exit code 2, no traceback) and the small value
checks that raise it. A leaf module: constructors and entry points anywhere in the package import it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class UserInputError(ValueError):
    """A problem in the user's input or config that they can fix; message says how."""


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int (bools are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (bools are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_int(value: Any, key: str, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """``value`` if it is an int in [minimum, maximum], else a UserInputError naming config ``key``.

    ``why`` follows the range in the message, e.g. `` (MobileViT downsamples by 32)``.
    """
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise UserInputError(f"{key} must be an integer {bounds}{why}, got {value!r}.")
    return value


def require_positive(value: Any, key: str, example: str = "") -> float:
    """``value`` if it is a finite number > 0, else a UserInputError naming config ``key``."""
    if not (is_number(value) and value > 0):
        raise UserInputError(f"{key} must be a number > 0{example}, got {value!r}.")
    return value


def require_choice(value: Any, key: str, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a UserInputError naming config ``key`` and the choices."""
    if value not in choices:
        raise UserInputError(f"{key} must be one of {list(choices)}, got {value!r}.")
    return value
