"""The class manager (rename, merge, delete) and free text's found phrases (mapped to classes)."""

from __future__ import annotations

from gdino.store import ProjectError

from ..app import App


def class_counts(app: App, state: dict) -> list[list]:
    """Rows [class, objects] in the project's order, for the class manager."""
    return [[name, count] for name, count in app.sessions.project(state).stats()["classes"].items()]


def rename_class(app: App, state: dict, old: str, new: str) -> str:
    """Rename a class, or merge it into `new` when that class exists; says how many objects it touched."""
    project = app.sessions.project(state)
    old, new = (old or "").strip(), (new or "").strip()
    counts = project.stats()["classes"]
    if old not in counts:
        raise ProjectError(f"there is no class {old!r} in this project")
    if not new:
        raise ProjectError("type the new name")
    existing = next((c for c in counts if c.casefold() == new.casefold()), None)
    if existing is None or existing == old:
        project.rename_class(old, new)
        return f"renamed {old!r} to {new!r} ({counts[old]} object(s))"
    moved = project.merge_class(old, existing)
    return f"merged {old!r} into {existing!r}: {moved} object(s) moved"


def delete_class(app: App, state: dict, name: str, with_objects: bool) -> str:
    """Delete a class; refused while objects use it unless `with_objects`, which deletes them too."""
    project = app.sessions.project(state)
    counts = project.stats()["classes"]
    if name not in counts:
        raise ProjectError(f"there is no class {name!r} in this project")
    if counts[name] and not with_objects:
        raise ProjectError(f"{counts[name]} object(s) use the class {name!r}: tick 'delete its objects too', or "
                           "rename it to merge it into another class")
    project.remove_class(name, delete_objects=with_objects)  # the store re-checks in its own transaction
    return f"deleted the class {name!r}" + (f" and its {counts[name]} object(s)" if counts[name] else "")


def phrase_choices(app: App, state: dict) -> list[str]:
    """The free-text phrases found in this project that are not classes yet."""
    return app.sessions.project(state).phrases


def map_phrase(app: App, state: dict, phrase: str | None, target: str | None) -> str:
    """Free text: give the objects labeled with a found phrase a class (an existing one or a new one)."""
    if not phrase:
        raise ProjectError("choose a found phrase first")
    target = (target or "").strip()
    if not target:
        raise ProjectError("type the class to map it to")
    moved = app.sessions.project(state).map_phrase(phrase, target)
    return f"{moved} object(s) labeled {phrase!r} are now {target!r}"
