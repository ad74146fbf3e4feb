"""Fault injection: seeded random SIGKILLs of real `gdino` processes while they add, label, import and
export (at least 10 kills a phase here; `python bench/fault_injection.py` runs hundreds). After each
kill: PRAGMA integrity_check is ok, no image is in the project twice, no image holds part of its objects,
an interrupted import left all or nothing, and the previous export is intact; after a final
uninterrupted run the project equals one that was never interrupted. See tests/fault_harness.py."""

import pytest
from fault_harness import export_kills, import_kills, label_kills

KILLS = 10


def test_kills_while_adding_and_labeling(tiny_hf, tmp_path):
    kills = label_kills(tmp_path, tiny_hf[1], KILLS, seed=1)
    assert kills["adding"] >= KILLS and kills["labeling"] >= KILLS


def test_kills_while_importing(tmp_path):
    assert import_kills(tmp_path, KILLS, seed=2) >= KILLS


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_kills_while_exporting(tmp_path, as_zip):
    assert export_kills(tmp_path, KILLS, seed=3, as_zip=as_zip) >= KILLS
