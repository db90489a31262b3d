"""The ``hydra.sweeper.params`` syntax as Optuna distributions, with the semantics of Hydra's own Optuna sweeper
plugin (hydra-optuna-sweeper 1.2/1.3), so existing search spaces keep their meaning:

================================  ==========================================================================
expression                        distribution
================================  ==========================================================================
``choice(a, b, ...)``             CategoricalDistribution([a, b, ...])
``range(a, b)``, ``range(a,b,s)`` IntDistribution(a, b, step=s): the end **is included** (unlike Hydra's basic
                                  sweeper); FloatDistribution(a, b, step=s) when a number is a float
``shuffle(range(...))``           CategoricalDistribution of the range's values (end excluded, as Hydra lists it)
``interval(a, b)``                FloatDistribution(a, b); IntDistribution(a, b) when both ends are ints
``int(interval(a, b))``           IntDistribution(a, b)
``tag(log, interval(a, b))``      the same on a log scale (log=True)
a plain value, e.g. ``0.1``       fixed: passed to every trial unchanged, not searched
================================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra._internal.grammar.utils import escape_special_characters
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import OverrideParseException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from mobilevit.errors import UserInputError

SYNTAX = (
    "choice(a, b, ...), range(start, stop[, step]), interval(low, high), int(interval(low, high)), "
    "tag(log, interval(low, high)), or a fixed value"
)


@dataclass
class SearchSpace:
    """Searched keys with their distributions, and fixed overrides passed to every trial (in order)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides of one trial: its sampled ``params`` (``key=value``), then the fixed values."""
        return [f"{key}={format_value(value)}" for key, value in params.items()] + [
            f"{key}={value}" for key, value in self.fixed.items()
        ]

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every searched key, for optuna.samplers.GridSampler (UserInputError for a continuous
        key)."""
        return {key: grid_values(key, distribution) for key, distribution in self.distributions.items()}


def format_value(value: Any) -> str:
    """A sampled value as the right-hand side of a Hydra override."""
    if isinstance(value, str):
        return escape_special_characters(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of one parsed override, or its value as a string when it is not a sweep."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(number, float) for number in (start, stop, step)):
            return FloatDistribution(start, stop, step=step)
        return IntDistribution(int(start), int(stop), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"{type(value).__name__} is not supported by the Optuna sweeper")


def parse_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str] = ()) -> SearchSpace:
    """``hydra.sweeper.params`` (key: expression) then the command line's overrides (``arguments``, which win for
    the same key) as a SearchSpace. Raises UserInputError naming the key of an expression that cannot be parsed or
    that Optuna refuses (e.g. ``interval(5, 1)``, a log scale from 0)."""
    lines = [(f"hydra.sweeper.params.{key}", f"{key}={value}") for key, value in (params or {}).items()]
    lines += [(line.split("=", 1)[0], line) for line in arguments]
    parser = OverridesParser.create()
    space = SearchSpace()
    for source, line in lines:
        try:
            (override,) = parser.parse_overrides([line])
            value = distribution(override)
        except (OverrideParseException, ValueError, TypeError) as error:
            # Hydra's parse errors: a generic first line, then the reason
            lines_of_error = [part for part in str(error).splitlines() if part.strip() and not part.startswith("See ")][:2] or [type(error).__name__]
            reason = lines_of_error[-1]
            raise UserInputError(
                f"{source}: cannot use {line.split('=', 1)[1]!r} ({reason}). Valid: {SYNTAX}."
            ) from None
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        if isinstance(value, BaseDistribution):
            space.distributions[key] = value
        else:
            space.fixed[key] = value
    return space


def grid_values(key: str, distribution: BaseDistribution) -> list[Any]:
    """Every value ``distribution`` can take, in order (the same set the other samplers draw from)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, (IntDistribution, FloatDistribution)) and distribution.step and not distribution.log:
        count = int(round((distribution.high - distribution.low) / distribution.step)) + 1
        values = [distribution.low + i * distribution.step for i in range(count)]
        return [int(v) for v in values] if isinstance(distribution, IntDistribution) else values
    raise UserInputError(
        f"hydra.sweeper.params.{key}: the grid sampler needs a discrete search space (choice(...), range(...) or "
        f"int(interval(...))), not {distribution!r}; use hydra/sweeper/sampler=tpe or random for it."
    )
