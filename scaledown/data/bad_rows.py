# What to do with a bad input row (malformed line, empty text): stop with file and line, or skip and count.
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from scaledown.errors import DataError


@dataclass
class BadRows:
    """Raises DataError on the first bad row, or (skip=True, --skip_bad_rows) counts it by reason.

    `first` keeps where each reason was first seen, so the summary can point at an example.
    """
    skip: bool = False
    counts: Counter = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def report(self, where: str, reason: str, detail: str) -> None:
        """A bad row at `where` ('corpus.jsonl line 7'); `reason` is the short label that is counted."""
        if not self.skip:
            raise DataError(f"{where}: {detail}. Fix the row, or pass --skip_bad_rows to skip and count such rows.")
        self.counts[reason] += 1
        self.first.setdefault(reason, where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self, what: str) -> Optional[str]:
        """One line for the user, e.g. 'skipped 2 bad corpus rows: 2 malformed JSON (first: c.jsonl line 3)'."""
        if not self.counts:
            return None
        parts = [f"{n} {reason} (first: {self.first[reason]})" for reason, n in sorted(self.counts.items())]
        return f"skipped {self.total} bad {what}: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "first": dict(self.first)}
