"""Two windows on one image (two tabs, or two people on a shared project link): an edit made on a view that
another window has since changed is refused and answered with what is stored, never applied over the other
window's edit; a window's own quick edits (sent before the replies to the earlier ones) are not stale; undo in
a stale window does not take back an edit it has not seen. Through the app's handler, checked in the store."""

import numpy as np
import pytest
from PIL import Image
from tiny_sam import save_tiny_sam

from ui import handlers as h
from ui.config import AppConfig
from ui.edit_order import WAIT_S
from ui.session import Sessions


@pytest.fixture
def app(tiny_hf, tmp_path):
    application = h.make_app(AppConfig(model=str(tiny_hf[1]), sam=str(save_tiny_sam(tmp_path / "sam.pth")),
                                       workspace=tmp_path / "ws"))
    yield application
    application.sessions.close()


@pytest.fixture
def image(app, tmp_path):
    """(state, project, image id, the object on it): one visitor's project with one box."""
    state = Sessions.new_state()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photo)
    h.add_uploads(app, state, [str(photo)])
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    project.add_classes(["cat", "dog"])
    obj = project.add_object(image_id, (10, 10, 50, 50), "cat", score=0.9, source="model")
    return state, project, image_id, obj


class Window:
    """One page: the canvas value it last drew, and edits made on that view (as canvas.js sends them)."""

    def __init__(self, app, state, image_id, name):
        self.app, self.state, self.image_id, self.name, self.seq = app, state, image_id, name, 0
        self.value = h.canvas_state(app, state, image_id)

    def revs(self, ids=None):
        return [[o["id"], o["rev"]] for o in self.value["objects"] if ids is None or o["id"] in ids]

    def send(self, kind, adopt=True, **fields):
        """The edit on the view this window shows; adopt=False: the reply has not arrived yet."""
        self.seq += 1
        ids = fields.get("object_ids") or ([fields["object_id"]] if fields.get("object_id") is not None else [])
        seen = self.revs() if kind in ("undo", "redo") else self.revs(ids)
        payload = {"kind": kind, "image_id": self.image_id, "seq": self.seq, "prev": self.seq - 1, "window": self.name,
                   "seen": seen, **fields}
        value, _ = h.canvas_edit(self.app, self.state, payload)
        if adopt:
            self.value = value
        return value


STALE = "changed in another window"


@pytest.mark.parametrize("edit", [
    {"kind": "resize", "box": [0, 0, 30, 30]},
    {"kind": "move", "dx": 5, "dy": 5},
    {"kind": "delete"},
    {"kind": "relabel", "class_name": "dog"},
    {"kind": "stroke", "points": [[20, 20], [30, 30]], "radius": 3.0, "erase": False, "class_name": "cat"},
])
def test_an_edit_on_a_stale_view_is_refused_and_the_other_windows_edit_kept(app, image, edit):
    state, project, image_id, obj = image
    a, b = Window(app, state, image_id, "window-a-0001"), Window(app, state, image_id, "window-b-0001")
    a.send("resize", object_id=obj.id, box=[20, 20, 80, 90])  # A's edit; B still shows the old box
    kept = project.objects(image_id)
    assert kept[0].box == (20, 20, 80, 90)
    fields = dict(edit)
    kind = fields.pop("kind")
    if kind in ("delete", "relabel"):
        fields["object_ids"] = [obj.id]
    else:
        fields["object_id"] = obj.id
    reply = b.send(kind, **fields)
    assert STALE in reply["message"]
    assert project.objects(image_id) == kept  # A's edit stands, nothing of B's was written
    assert reply["objects"][0]["box"] == [20, 20, 80, 90]  # B now draws what is stored
    # on the view it now shows, B's edit goes through
    again = b.send(kind, **fields)
    assert again["message"] is None
    assert project.objects(image_id) != kept


def test_a_windows_own_quick_edits_are_not_stale(app, image):
    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0002")
    # four edits sent before any reply arrives: each is made on the first view, plus the window's own edits
    a.send("move", adopt=False, object_id=obj.id, dx=4, dy=0)
    a.send("resize", adopt=False, object_id=obj.id, box=[0, 0, 40, 40])
    a.send("relabel", adopt=False, object_ids=[obj.id], class_name="dog")
    last = a.send("undo", adopt=False)
    assert last["message"] is None
    [stored] = project.objects(image_id)
    assert stored.box == (0, 0, 40, 40) and stored.class_name == "cat"  # the relabel undone, the resize kept
    # an added box and an undo sent before the add's reply: the undo takes back the add
    a.value = last
    a.send("add", adopt=False, box=[60, 60, 90, 90], class_name="dog")
    assert len(project.objects(image_id)) == 2
    assert a.send("undo", adopt=False)["message"] is None
    assert [o.id for o in project.objects(image_id)] == [obj.id]


def test_undo_in_a_stale_window_does_not_take_back_an_edit_it_has_not_seen(app, image):
    state, project, image_id, obj = image
    a, b = Window(app, state, image_id, "window-a-0003"), Window(app, state, image_id, "window-b-0003")
    a.send("relabel", object_ids=[obj.id], class_name="dog")
    a.send("add", box=[60, 60, 90, 90], class_name="cat")  # B shows neither
    stored = project.objects(image_id)
    reply = b.send("undo")
    assert STALE in reply["message"] and project.objects(image_id) == stored
    assert len(reply["objects"]) == 2  # B now shows both
    assert b.send("undo")["message"] is None  # now it has seen them: undo takes back the add
    assert [o.class_name for o in project.objects(image_id)] == ["dog"]
    a_reply = a.send("redo")  # A's view has the added box, which B's undo removed: refused
    assert STALE in a_reply["message"] and len(project.objects(image_id)) == 1


def test_an_edit_after_a_model_run_or_another_process_is_stale(app, image):
    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0004")
    project.edit_objects(image_id, {obj.id: None})  # another process deleted it and added another
    project.add_object(image_id, (5, 5, 25, 25), "dog")
    reply = a.send("move", adopt=False, object_id=obj.id, dx=1, dy=1)
    assert "gone" in reply["message"] or STALE in reply["message"]
    # undo on the old view (it shows the deleted box): it would bring back a box this window never saw deleted
    assert STALE in a.send("undo")["message"]  # refused; the reply shows what is stored
    assert [o.class_name for o in project.objects(image_id)] == ["dog"]
    assert a.send("undo")["message"] is None  # on the view it now shows: undo takes back the delete
    assert sorted(o.class_name for o in project.objects(image_id)) == ["cat", "dog"]


@pytest.mark.parametrize("bad", [
    {"window": 7}, {"window": ""}, {"window": "x" * 200}, {"window": "a b/c"},
    {"seen": "all"}, {"seen": [[1]]}, {"seen": [["1", "abc"]]}, {"seen": [[1, 5]]}, {"seen": [[1, "z" * 100]]},
    {"seen": [[1, "abc"]] * 20_001}, {"seq": None}, {"prev": None}, {"prev": 1}, {"prev": -1}, {"seq": True},
])
def test_a_malformed_view_is_refused_in_the_pages_words(app, image, bad):
    state, project, image_id, obj = image
    payload = {"kind": "move", "image_id": image_id, "seq": 1, "prev": 0, "object_id": obj.id, "dx": 1, "dy": 1,
               "window": "window-a-0005", "seen": [[obj.id, "0" * 16]], **bad}
    value, _ = h.canvas_edit(app, state, payload)
    assert "reload the page" in value["message"] and project.objects(image_id) == [obj]


def test_a_windows_edits_are_applied_in_the_order_it_made_them_whatever_order_they_arrive_in(app, image):
    """The browser sends each edit as its own request; the network (or a busy machine) can deliver a later one
    first. Each edit names the one the window sent before it ("prev"); the server applies it after that one."""
    import threading

    state, project, image_id, obj = image
    view = h.canvas_state(app, state, image_id)
    seen = [[o["id"], o["rev"]] for o in view["objects"]]

    def payload(seq, prev, name):
        return {"kind": "relabel", "image_id": image_id, "seq": seq, "prev": prev, "window": "window-a-0006",
                "seen": seen, "object_ids": [obj.id], "class_name": name}
    replies = {}
    second = threading.Thread(target=lambda: replies.update(second=h.canvas_edit(app, state, payload(2, 1, "dog"))[0]))
    second.start()  # the second edit arrives first
    second.join(timeout=0.5)
    assert second.is_alive(), "the second edit did not wait for the first"
    assert project.objects(image_id)[0].class_name == "cat"
    first, _ = h.canvas_edit(app, state, payload(1, 0, "bird"))
    second.join(timeout=30)
    assert first["message"] is None and replies["second"]["message"] is None
    assert project.objects(image_id)[0].class_name == "dog"  # the person's last choice
    assert project.undo(image_id) and project.objects(image_id)[0].class_name == "bird"  # the history in that order


def test_an_edit_whose_predecessor_never_arrives_is_applied_after_a_short_wait(app, image):
    """A server restart forgets what each window sent; a lost request never comes: the next edit waits a moment
    (ui/edit_order.py WAIT_S), then is applied."""
    import time

    state, project, image_id, obj = image
    view = h.canvas_state(app, state, image_id)
    seen = [[o["id"], o["rev"]] for o in view["objects"]]
    began = time.monotonic()
    reply, _ = h.canvas_edit(app, state, {"kind": "relabel", "image_id": image_id, "seq": 8, "prev": 7,
                                          "window": "window-a-0007", "seen": seen, "object_ids": [obj.id],
                                          "class_name": "dog"})
    assert reply["message"] is None and project.objects(image_id)[0].class_name == "dog"
    assert time.monotonic() - began < 30  # bounded (the wait itself is a fraction of that)


def test_a_replaced_mask_overlay_stays_until_the_replies_naming_it_are_surely_sent(tmp_path):
    """Replies to several edits are made at once now: the overlay file a reply names must not be deleted by the
    next reply before gradio has copied it. Replaced files are removed only after overlay_keep_s."""
    import time

    from gdino.masks import mask_to_rle
    from gdino.project import ObjectRecord
    from ui.canvas_view import CanvasFiles

    files = CanvasFiles(overlay_keep_s=0.5)
    try:
        def masked(x):
            mask = np.zeros((40, 60), dtype=bool)
            mask[5:15, x:x + 10] = True
            return [ObjectRecord(1, 1, "cat", (x, 5, x + 10, 15), None, "manual", mask_to_rle(mask))]
        first = files.overlay("token", 1, masked(5), (40, 60))
        second = files.overlay("token", 1, masked(20), (40, 60))
        assert first != second and first.exists() and second.exists()  # the first may still be on its way
        assert files.overlay("token", 1, masked(20), (40, 60)) == second  # unchanged masks: the same file
        time.sleep(0.7)
        third = files.overlay("token", 1, masked(30), (40, 60))
        assert not first.exists() and second.exists() and third.exists()  # only what was replaced long ago goes
    finally:
        files.close()


def test_windows_do_not_wait_for_each_other(app, image):
    """A window whose edit waits for its predecessor holds up only itself: another window's edit on the same
    image is applied meanwhile."""
    import threading

    state, project, image_id, obj = image
    app.order.wait_s = 30.0
    try:
        view = h.canvas_state(app, state, image_id)
        seen = [[o["id"], o["rev"]] for o in view["objects"]]
        waiting = {"kind": "move", "image_id": image_id, "seq": 5, "prev": 4, "window": "window-a-0008",
                   "seen": seen, "object_id": obj.id, "dx": 1, "dy": 0}
        blocked = threading.Thread(target=h.canvas_edit, args=(app, state, waiting))
        blocked.start()
        other = {"kind": "add", "image_id": image_id, "seq": 1, "prev": 0, "window": "window-b-0008", "seen": [],
                 "box": [60, 60, 90, 90], "class_name": "dog"}
        reply, _ = h.canvas_edit(app, state, other)
        assert reply["message"] is None and len(project.objects(image_id)) == 2
        assert blocked.is_alive()  # window A still waits for its edit 4
        first = {**waiting, "seq": 4, "prev": 0, "dx": 0}  # its predecessor arrives (a no-op move)
        h.canvas_edit(app, state, first)
        blocked.join(timeout=30)
        assert not blocked.is_alive()
        assert project.objects(image_id)[0].box == (11, 10, 51, 50)
    finally:
        app.order.wait_s = WAIT_S
