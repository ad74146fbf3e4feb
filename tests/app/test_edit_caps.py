"""What one canvas edit may carry (issue 24, item 8), on a real project and its SQLite file: a long, natural brush
stroke on a 12 MP photo is stored; a comb-shaped stroke whose mask would take megabytes is refused with a message in
the page's words and nothing stored, also when the comb is built up over several strokes; an eraser may still thin a
mask that is over the cap; too many points, objects or SAM clicks in one edit are refused up front."""

import sqlite3
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from gdino.masks import mask_to_rle
from gdino.store import ObjectState, Project
from ui import actions as h
from ui import edits
from ui.app_config import AppConfig
from ui.edits import MAX_CLICKS, MAX_IDS, MAX_MASK_CHARS, MAX_POINTS, EditError, parse
from ui.session import Sessions

H, W = 3000, 4000  # a 12 MP photo


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (W, H), (90, 120, 150)).save(path)
    with Project.create(tmp_path / "proj", ["cat", "fence"]) as p:
        p.add_image(path)
        yield p


def stroke(project, points, radius, object_id=None, erase=False):
    payload = {"kind": "stroke", "image_id": project.images()[0].id, "object_id": object_id,
               "points": [list(map(float, p)) for p in points], "radius": radius, "erase": erase, "class_name": "fence"}
    return edits.apply(project, parse(payload))


def stored(project) -> tuple[int, int, int]:
    """(objects, history entries, bytes of masks and history) as the project's SQLite file holds them."""
    db = sqlite3.connect(project.path / "project.sqlite")
    try:
        objects, masks = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(mask)), 0) FROM objects").fetchone()
        entries, history = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(entry)), 0) FROM edits").fetchone()
    finally:
        db.close()
    return objects, entries, masks + history


def comb(teeth: int, x0: float, x1: float, y0: float = 0.5, gap: float = 2.0) -> list[list[float]]:
    """A stroke that zig-zags across [x0, x1]: `teeth` one-pixel lines, `gap` px apart (each column of the
    mask crosses every tooth: two runs of its RLE per tooth)."""
    points = []
    for k in range(teeth):
        y = y0 + k * gap
        points += [[x0, y], [x1, y]] if k % 2 == 0 else [[x1, y], [x0, y]]
    return points


def natural_stroke(n: int = 5000) -> list[list[float]]:
    """A person's long brush stroke: a wavy drag across the photo, sampled every few pixels."""
    t = np.linspace(0.0, 1.0, n)
    return np.stack([200 + 3600 * t, 1500 + 900 * np.sin(t * 25) + 40 * np.sin(t * 300)], axis=1).tolist()


def hatching(passes: int = 40) -> list[list[float]]:
    """Colouring in a region back and forth in one stroke with a thin brush (the most detailed mask a person
    paints in one go): `passes` strokes 1,500 px long, 6 px apart, sampled every 5 px (12,000 points)."""
    points = []
    for k in range(passes):
        xs = np.linspace(1000, 2500, 300)
        ys = 800 + k * 6 + np.linspace(0, 6, 300)
        points += np.stack([xs if k % 2 == 0 else xs[::-1], ys], axis=1).tolist()
    return points


def test_a_long_natural_stroke_and_a_hatched_fill_are_stored(project):
    done = stroke(project, natural_stroke(), radius=20)
    (obj,) = project.objects(project.images()[0].id)
    assert done.selected == obj.id and obj.mask is not None
    hatched = stroke(project, hatching(), radius=2, object_id=obj.id)
    assert hatched.selected == obj.id
    (obj,) = project.objects(project.images()[0].id)
    assert len(obj.mask["counts"]) < MAX_MASK_CHARS / 4  # far from the cap: a person does not reach it
    assert stored(project)[:2] == (1, 2)


def test_a_comb_stroke_is_refused_and_nothing_is_stored(project):
    before = stored(project)
    with pytest.raises(EditError, match="too detailed to store") as refused:
        stroke(project, comb(600, 0.5, W - 0.5), radius=0.5)
    assert "shorter" in str(refused.value) and "MB" in str(refused.value)
    assert stored(project) == before == (0, 0, 0)
    # as the page sends it: the canvas shows the refusal, the project is unchanged
    (obj,) = project.edit_objects(project.images()[0].id, new=[ObjectState("cat", (10, 10, 50, 50))])
    before = stored(project)
    with pytest.raises(EditError, match="too detailed to store"):
        stroke(project, comb(600, 0.5, W - 0.5), radius=0.5, object_id=obj.id)
    assert stored(project) == before


def test_a_comb_built_over_several_strokes_stops_at_the_cap(project):
    """Each stroke adds a band of teeth (about 300 KB of RLE): those that keep the mask under the cap are
    stored, the one that would take it over is refused, and what is stored stays under the cap."""
    iid = project.images()[0].id
    stroke(project, comb(40, 0.5, W - 0.5), radius=0.5)
    (obj,) = project.objects(iid)
    refused = None
    for band in range(1, 12):
        try:
            stroke(project, comb(40, 0.5, W - 0.5, y0=0.5 + band * 100), radius=0.5, object_id=obj.id)
        except EditError as err:
            refused = band
            assert "too detailed to store" in str(err)
            break
    assert refused is not None and refused > 1
    (obj,) = project.objects(iid)
    assert len(obj.mask["counts"]) <= MAX_MASK_CHARS
    assert project.history(iid) == (True, False) and stored(project)[1] == refused  # one entry per stored stroke


def test_an_eraser_may_thin_a_mask_that_is_over_the_cap(project):
    """A mask that came in some other way (an import) and is over the cap: erasing from it is allowed, adding
    to it is not."""
    iid = project.images()[0].id
    mask = np.zeros((H, W), bool)
    mask[0:500:2, :] = True  # 250 one-pixel lines across the photo: about 2 MB of RLE
    (obj,) = project.edit_objects(iid, new=[ObjectState("fence", (0, 0, W, H), mask=mask_to_rle(mask))])
    assert len(obj.mask["counts"]) > MAX_MASK_CHARS
    stroke(project, [[0, 250], [W, 250]], radius=100, object_id=obj.id, erase=True)
    (thinned,) = project.objects(iid)
    assert len(thinned.mask["counts"]) < len(obj.mask["counts"])
    with pytest.raises(EditError, match="too detailed to store"):
        stroke(project, comb(100, 0.5, W - 0.5, y0=1000.5), radius=0.5, object_id=obj.id)


def test_the_page_shows_the_refusal_and_the_store_is_unchanged(tmp_path):
    app = h.make_app(AppConfig(model="unused", sam="none", workspace=tmp_path / "ws"))
    try:
        state = Sessions.new_state()
        path = tmp_path / "big.png"
        Image.new("RGB", (W, H), (90, 120, 150)).save(path)
        h.add_uploads(app, state, [str(path)])
        project = app.sessions.project(state)
        image_id = h.current_image(app, state)
        before = stored(project)
        value, shown = h.canvas_edit(app, state, {"kind": "stroke", "image_id": image_id, "object_id": None,
                                                  "points": comb(600, 0.5, W - 0.5), "radius": 0.5, "erase": False,
                                                  "class_name": "fence"})
        assert shown == image_id and value["objects"] == [] and "too detailed to store" in value["message"]
        assert stored(project) == before
    finally:
        app.sessions.close()


@pytest.mark.parametrize("payload, message", [
    ({"kind": "stroke", "points": [[1.0, 2.0 + k % 2] for k in range(MAX_POINTS + 1)], "radius": 2.0,
      "erase": False, "object_id": None, "class_name": "cat"}, "too long to send at once"),
    ({"kind": "delete", "object_ids": list(range(MAX_IDS + 1))}, f"more than {MAX_IDS} objects"),
    ({"kind": "relabel", "object_ids": list(range(MAX_IDS + 1)), "class_name": "cat"}, f"more than {MAX_IDS} objects"),
])
def test_an_edit_carrying_too_much_is_refused_up_front(payload, message):
    with pytest.raises(EditError, match=message):
        parse({"image_id": 1, **payload})


def test_a_click_chain_is_capped(project):
    iid = project.images()[0].id

    def disc(points, labels, box):  # stands in for SAM: the mask a click makes
        yy, xx = np.ogrid[:H, :W]
        x, y = points[-1]
        return (xx - x) ** 2 + (yy - y) ** 2 < 400

    clicks = {"box": None, "points": [[100.0 + k, 100.0, True] for k in range(MAX_CLICKS)]}
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (80, 80, 300, 120),
                                                        mask=mask_to_rle(disc([[100, 100]], None, None)))])
    project.edit_objects(iid, {obj.id: replace(ObjectState.of(obj), clicks=clicks)}, expect=[obj])
    before = stored(project)
    with pytest.raises(EditError, match=f"{MAX_CLICKS} clicks"):
        edits.apply(project, parse({"kind": "click", "image_id": iid, "object_id": obj.id, "x": 150.0, "y": 100.0,
                                    "positive": True, "class_name": "cat"}), segment=disc)
    assert stored(project) == before


def test_a_view_of_too_many_objects_is_refused():
    from ui.payload import MAX_SEEN, ViewError, parse_seen

    seen = [[k, "0123456789abcdef"] for k in range(MAX_SEEN + 1)]
    with pytest.raises(ViewError, match=f"more than {MAX_SEEN} objects"):
        parse_seen({"kind": "undo", "image_id": 1, "window": "window-0001", "seq": 2, "prev": 1, "base": 1, "seen": seen})
