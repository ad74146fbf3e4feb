"""Collect a dataset's problems while checking it, then refuse it once, listing the first few."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .validate import DatasetError


class Problems:
    """`with problems.at(): check(...)` records a DatasetError and goes on with the next item, so one
    error message can list every problem (the first `limit`) instead of one per attempt. A DatasetError
    that itself lists problems (from another Problems, e.g. one label file's) adds them one by one, so
    the message lists them once, under one headline."""

    def __init__(self, limit: int, headline: str):
        self.limit = limit
        self.headline = headline
        self.found: list[str] = []

    @contextmanager
    def at(self) -> Iterator[None]:
        try:
            yield
        except DatasetError as err:
            self.found.extend(getattr(err, "problems", None) or [str(err)])

    def add(self, text: str) -> None:
        self.found.append(text)

    def raise_if_any(self) -> None:
        if not self.found:
            return
        shown = self.found[: self.limit]
        more = len(self.found) - len(shown)
        lines = "\n".join(f"- {text}" for text in shown)
        tail = f"\n- ... and {more} more" if more else ""
        count = f"{len(self.found)} problem(s)" if len(self.found) > 1 else "1 problem"
        err = DatasetError(f"{self.headline}: {count}; nothing was imported:\n{lines}{tail}")
        err.problems = list(self.found)
        raise err
