"""One rule of the quality gate (a measured column and what its values must be), and a failure of it.

A :class:`Check` becomes one Great Expectations expectation (``to_gx``) and can
judge a row in plain Python (``judge``); both read the same bounds, so the
verdicts agree (tests hold them to it). Null values pass every kind of check
except ``null``/``not_null``: a check that does not apply to a row (no
transcript, no live snapshot to compare with) is measured as null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["between", "in_set", "null", "not_null"]


@dataclass(frozen=True)
class Failure:
    """One failed check: its name, the measured value, the threshold, and a sentence for people."""

    check: str
    value: float | str | None
    threshold: float | str | None
    message: str

    def as_dict(self) -> dict:
        return {"check": self.check, "value": self.value, "threshold": self.threshold, "message": self.message}


def _is_null(value: Any) -> bool:
    # NaN is how pandas stores a missing number; it is not equal to itself.
    return value is None or (isinstance(value, float) and value != value)


@dataclass(frozen=True)
class Check:
    """A named rule over one measured column."""

    name: str
    column: str
    kind: Kind
    describe: Callable[[Any, Mapping], str]  # (measured value, row) → sentence for people
    min_value: float | None = None
    max_value: float | None = None
    value_set: tuple[str, ...] = ()
    description: str = ""

    @property
    def threshold(self) -> float | str | None:
        if self.kind == "between":
            return self.max_value if self.max_value is not None else self.min_value
        if self.kind == "in_set":
            return ",".join(self.value_set)
        return "null" if self.kind == "null" else "present"

    def passes(self, value: Any) -> bool:
        if self.kind == "null":
            return _is_null(value)
        if self.kind == "not_null":
            return not _is_null(value)
        if _is_null(value):
            return True
        if self.kind == "in_set":
            return value in self.value_set
        if self.min_value is not None and value < self.min_value:
            return False
        return self.max_value is None or value <= self.max_value

    def failure(self, row: Mapping) -> Failure:
        value = row.get(self.column)
        return Failure(self.name, None if _is_null(value) else value, self.threshold, self.describe(value, row))

    def judge(self, row: Mapping) -> Failure | None:
        """The failure of ``row`` under this check, or None when it passes."""
        return None if self.passes(row.get(self.column)) else self.failure(row)

    def to_gx(self) -> Any:
        """The Great Expectations expectation for this check (imports GX)."""
        import great_expectations as gx

        common = {"column": self.column, "meta": {"check": self.name}, "description": self.description or None}
        if self.kind == "between":
            return gx.expectations.ExpectColumnValuesToBeBetween(
                min_value=self.min_value, max_value=self.max_value, **common
            )
        if self.kind == "in_set":
            return gx.expectations.ExpectColumnValuesToBeInSet(value_set=list(self.value_set), **common)
        if self.kind == "null":
            return gx.expectations.ExpectColumnValuesToBeNull(**common)
        return gx.expectations.ExpectColumnValuesToNotBeNull(**common)
