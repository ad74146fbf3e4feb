"""Browsing and review: the image list as filtered (the "Show" menu: ui/render.py's LIST_FILTERS), the image
this browser looks at, stepping through the list, marking images reviewed or skipped, removing one."""

from __future__ import annotations

from gdino.store import ProjectError

from ..app import App
from ..render import image_rows
from ..text import plain


def review_counter(app: App, state: dict) -> str:
    """"12 / 49 reviewed" and the other statuses, for beside the list."""
    counts = app.sessions.project(state).stats()["status"]
    total = sum(counts.values())
    if not total:
        return ""
    rest = ", ".join(f"{counts[s]} {s}" for s in ("auto", "unlabeled", "skipped") if counts[s])
    return f"**{counts['reviewed']} / {total} reviewed**" + (f" ({rest})" if rest else "")


def rows(app: App, state: dict, list_filter: str) -> list[list]:
    """The image list's rows, filtered / ordered by `list_filter` (ui/render.image_rows)."""
    return image_rows(app.sessions.project(state), list_filter)


def current_image(app: App, state: dict) -> int | None:
    """The image this browser looks at: the remembered one, else the first."""
    project = app.sessions.project(state)
    images = project.images(order="name")
    ids = [r.id for r in images]
    if state.get("image_id") in ids:
        return state["image_id"]
    return ids[0] if ids else None


def step(app: App, state: dict, list_filter: str, delta: int) -> int | None:
    """The next / previous image in the list as it is filtered and ordered now (wrapping around)."""
    ids = [row[0] for row in rows(app, state, list_filter)] or [r.id for r in app.sessions.project(state).images()]
    if not ids:
        return None
    current = state.get("image_id")
    if current not in ids:
        return ids[0]
    return ids[(ids.index(current) + delta) % len(ids)]


def image_line(app: App, state: dict, image_id: int, readable: bool = True) -> str:
    """The line about the image beside the canvas: name, size, status, objects (and a damaged file)."""
    record = app.sessions.project(state).image(image_id)
    info = (f"**{plain(record.name)}** ({record.width}x{record.height}) - status **{record.status}** - "
            f"{record.num_objects} object(s)")
    if not readable:
        info += (" - **its file cannot be read any more** (missing or damaged): the grey picture stands in for it; "
                 "*Remove image* takes it and its labels out of the project")
    return info


def remove_image(app: App, state: dict, list_filter: str, image_id: int | None) -> tuple[int | None, str]:
    """Remove the image and its labels; returns (the image to show next in the list as filtered, a message)."""
    if image_id is None:
        raise ProjectError("no image selected")
    project = app.sessions.project(state)
    ids = [row[0] for row in rows(app, state, list_filter)]
    following = ids[(ids.index(image_id) + 1) % len(ids)] if image_id in ids and len(ids) > 1 else None
    record = project.image(image_id)
    project.remove_image(image_id)
    remaining = [row[0] for row in rows(app, state, list_filter)]
    nxt = following if following in remaining else (remaining[0] if remaining else None)
    return nxt, f"removed {record.name} and its {record.num_objects} object(s)"


def set_status(app: App, state: dict, image_id: int | None, status: str) -> None:
    if image_id is None:
        raise ProjectError("no image selected")
    app.sessions.project(state).set_status(image_id, status)


def mark_and_step(app: App, state: dict, list_filter: str, image_id: int | None, status: str) -> int | None:
    """Mark the image (reviewed, skipped) and return the next one in the list as it is filtered now. The
    next one is found before marking: marking may take the image out of the filter (e.g. "unlabeled")."""
    if image_id is None:
        raise ProjectError("no image selected")
    ids = [row[0] for row in rows(app, state, list_filter)]
    following = None
    if image_id in ids and len(ids) > 1:
        following = ids[(ids.index(image_id) + 1) % len(ids)]
    set_status(app, state, image_id, status)
    remaining = [row[0] for row in rows(app, state, list_filter)]
    if following in remaining:
        return following
    return remaining[0] if remaining else image_id
