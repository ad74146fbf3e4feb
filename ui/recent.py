"""Bounded memory of the most recently used: what the server keeps per visitor and per window (ui/window_state.py,
ui/edit_order.py) without growing for ever."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


def recent(table: OrderedDict, key: Any, limit: int) -> OrderedDict:
    """table[key] (a new empty OrderedDict if absent), now the most recently used; the least recently used
    entries beyond `limit` dropped."""
    inner = table.pop(key, None)
    table[key] = inner if inner is not None else OrderedDict()
    while len(table) > limit:
        table.popitem(last=False)
    return table[key]


def put(table: OrderedDict, key: Any, value: Any, limit: int) -> None:
    """table[key] = value as the most recent entry; the oldest beyond `limit` dropped."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)
