"""How a run reports while it works: a `Reporter` opens one `Stage` per step ("adding", "labeling"); a stage
counts images done and shows a failure the moment it happens. `gdino label` draws them as tqdm bars on
stderr; `QUIET` (the default) shows nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Stage(Protocol):
    def advance(self, n: int = 1) -> None:
        """n more images done."""

    def reach(self, done: int) -> None:
        """`done` images done in all."""

    def failed(self, name: str, why: object) -> None:
        """`name` (an image, a shard) failed (`why`: the error or its message); said at once, the run goes on."""

    def count_failed(self, failed: int) -> None:
        """The failures so far, beside the progress."""


class Reporter(Protocol):
    def stage(self, name: str, total: int, *, unit: str = "img", show_empty: bool = True) -> AbstractContextManager[Stage]:
        """A step of `total` units (images, or "shard"s); show_empty=False: show nothing when total is 0."""


class _QuietStage:
    def advance(self, n: int = 1) -> None:
        pass

    def reach(self, done: int) -> None:
        pass

    def failed(self, name: str, why: object) -> None:
        pass

    def count_failed(self, failed: int) -> None:
        pass


class _Quiet:
    @contextmanager
    def stage(self, name: str, total: int, *, unit: str = "img", show_empty: bool = True) -> Iterator[Stage]:
        yield _QuietStage()


QUIET: Reporter = _Quiet()
