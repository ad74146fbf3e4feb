"""A project's settings (JSON values by key: the app's last prompt and thresholds) and its counts."""

from __future__ import annotations

import json
from typing import Any

from ..checks import STATUSES
from .db import Database
from .errors import ProjectError
from .values import to_json


class Settings:
    """`Project.set_setting`, `setting` and `stats`."""

    def __init__(self, database: Database):
        self._db = database

    def set(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key:
            raise ProjectError(f"a setting key must be a non-empty string, got {key!r}")
        value_json = to_json(value, f"the setting {key!r}", object)
        with self._db.write() as db:
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, value_json))

    def get(self, key: str, default: Any = None) -> Any:
        with self._db.read() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def stats(self) -> dict:
        with self._db.read() as db:
            status = dict.fromkeys(STATUSES, 0)
            status.update(db.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
            counts = db.execute("SELECT c.name, c.kind, COUNT(o.id) FROM classes c LEFT JOIN objects o ON o.class_id = c.id "
                                "GROUP BY c.id ORDER BY c.position, c.id").fetchall()
        classes = {name: n for name, kind, n in counts if kind == "class"}
        phrases = {name: n for name, kind, n in counts if kind == "phrase" and n}
        return {"images": sum(status.values()), "objects": sum(classes.values()) + sum(phrases.values()),
                "status": status, "classes": classes, "phrases": phrases}
