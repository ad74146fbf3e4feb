"""The commands' progress: a `labeling.progress.Reporter` drawn as tqdm bars on stderr (hidden when stderr
is not a terminal), a failure written above the bar the moment it happens."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


class _BarStage:
    def __init__(self, bar: tqdm, failed: str):
        self.bar, self.template = bar, failed

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def reach(self, done: int) -> None:
        self.bar.update(done - self.bar.n)

    def failed(self, name: str, why: object) -> None:
        self.bar.write(self.template.format(name=name, why=why), file=sys.stderr)

    def count_failed(self, failed: int) -> None:
        self.bar.set_postfix(failed=failed, refresh=False)


class Bars:
    """failed: the line for a failure, with {name} and {why} ("gdino label: skipping {name}: {why}")."""

    def __init__(self, failed: str):
        self.template = failed

    @contextmanager
    def stage(self, name: str, total: int, *, unit: str = "img", show_empty: bool = True) -> Iterator[_BarStage]:
        with tqdm(total=total, desc=name, unit=unit, file=sys.stderr, disable=None if total or show_empty else True) as bar:
            yield _BarStage(bar, self.template)
