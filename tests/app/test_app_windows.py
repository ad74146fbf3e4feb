"""Two windows on one image (two tabs, or two people on a shared project link): an edit made on a view that
another window has since changed is refused and answered with what is stored, never applied over the other
window's edit; a window's own quick edits (sent before the replies to the earlier ones) are not stale; undo in
a stale window does not take back an edit it has not seen. Through the app's handler, checked in the store."""

import numpy as np
import pytest
from app_harness import tiny_app
from PIL import Image

from gdino.store import ObjectState
from ui import actions as h
from ui.edit_order import WAIT_S
from ui.session import Sessions


@pytest.fixture
def app(tiny_hf, tmp_path):
    application = tiny_app(tiny_hf[1], tmp_path)
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
    (obj,) = project.edit_objects(image_id, new=[ObjectState("cat", (10, 10, 50, 50), score=0.9, source="model")])
    return state, project, image_id, obj


class Window:
    """One page: the canvas value it last drew, and edits made on that view (as canvas.js sends them)."""

    def __init__(self, app, state, image_id, name):
        self.app, self.state, self.image_id, self.name, self.seq = app, state, image_id, name, 0
        self.value = h.canvas_state(app, state, image_id)

    def revs(self, ids=None):
        return [[o["id"], o["rev"]] for o in self.value["objects"] if ids is None or o["id"] in ids]

    def payload(self, kind, **fields):
        """The next edit, made on the view this window shows."""
        self.seq += 1
        ids = fields.get("object_ids") or ([fields["object_id"]] if fields.get("object_id") is not None else [])
        seen = self.revs() if kind in ("undo", "redo") else self.revs(ids)
        return {"kind": kind, "image_id": self.image_id, "seq": self.seq, "prev": self.seq - 1, "window": self.name,
                "base": self.value["revision"], "seen": seen, **fields}

    def send(self, kind, adopt=True, refine=None, **fields):
        """The edit on the view this window shows; adopt=False: the reply has not arrived yet."""
        value, _ = h.canvas_edit(self.app, self.state, self.payload(kind, **fields), refine=refine)
        if adopt:
            self.value = value
        return value

    def in_thread(self, kind, refine=None, **fields):
        """The edit sent from another thread (its reply in .reply once joined)."""
        import threading

        payload = self.payload(kind, **fields)
        thread = threading.Thread(target=lambda: setattr(thread, "reply", h.canvas_edit(self.app, self.state, payload,
                                                                                          refine=refine)[0]))
        thread.start()
        return thread


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
    project.edit_objects(image_id, new=[ObjectState("dog", (5, 5, 25, 25))])  # another process added another box
    project.edit_objects(image_id, {obj.id: None})  # and deleted this one
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
    {"seen": [[1, "abc"]] * 100_001}, {"seq": None}, {"base": None}, {"base": -1}, {"base": "7"},
    {"prev": None}, {"prev": 1}, {"prev": -1}, {"seq": True},
])
def test_a_malformed_view_is_refused_in_the_pages_words(app, image, bad):
    state, project, image_id, obj = image
    payload = {"kind": "move", "image_id": image_id, "seq": 1, "prev": 0, "object_id": obj.id, "dx": 1, "dy": 1,
               "window": "window-a-0005", "base": 1, "seen": [[obj.id, "0" * 16]], **bad}
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
                "base": view["revision"], "seen": seen, "object_ids": [obj.id], "class_name": name}
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
                                          "window": "window-a-0007", "base": view["revision"], "seen": seen,
                                          "object_ids": [obj.id],
                                          "class_name": "dog"})
    assert reply["message"] is None and project.objects(image_id)[0].class_name == "dog"
    assert time.monotonic() - began < 30  # bounded (the wait itself is a fraction of that)


def test_a_replaced_mask_overlay_stays_until_the_replies_naming_it_are_surely_sent(tmp_path):
    """Replies to several edits are made at once now: the overlay file a reply names must not be deleted by the
    next reply before gradio has copied it. Replaced files are removed only after overlay_keep_s."""
    import time

    from gdino.masks import mask_to_rle
    from gdino.store import ObjectRecord
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
                   "base": view["revision"], "seen": seen, "object_id": obj.id, "dx": 1, "dy": 0}
        blocked = threading.Thread(target=h.canvas_edit, args=(app, state, waiting))
        blocked.start()
        other = {"kind": "add", "image_id": image_id, "seq": 1, "prev": 0, "window": "window-b-0008", "seen": [],
                 "base": view["revision"], "box": [60, 60, 90, 90], "class_name": "dog"}
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


def _slow(app, seconds):
    """SAM for a click that takes `seconds` (a first click loading the model, or one waiting for a job's image)."""
    import time

    def refine(pixels, points, labels, box, mask=None, **project):  # project: the project's SAM and its store
        time.sleep(seconds)
        return h.refine_mask(app, pixels, points, labels, box, mask, **project)
    return refine


def test_a_slow_click_is_not_overtaken_by_the_next_edit(app, image):
    """The next edit waits for a predecessor that has arrived however long it runs (not just WAIT_S)."""
    import time

    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0009")
    click = a.in_thread("click", refine=_slow(app, WAIT_S + 1.5), object_id=obj.id, x=30.0, y=30.0, positive=True,
                        class_name="cat")
    time.sleep(0.3)  # the click has arrived and runs
    relabel = a.in_thread("relabel", object_ids=[obj.id], class_name="dog")
    click.join(60)
    relabel.join(60)
    assert click.reply["message"] is None and relabel.reply["message"] is None
    [stored] = project.objects(image_id)
    assert stored.class_name == "dog" and stored.clicks is not None  # both, in the order made
    assert project.undo(image_id) and project.objects(image_id)[0].class_name == "cat"  # the relabel came last


def test_undo_right_after_a_slow_creating_click_takes_back_that_click(app, image):
    import time

    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0010")
    click = a.in_thread("click", refine=_slow(app, WAIT_S + 1.5), object_id=None, x=100.0, y=80.0, positive=True,
                        class_name="dog")
    time.sleep(0.3)
    undo = a.in_thread("undo")
    click.join(60)
    undo.join(60)
    assert undo.reply["message"] is None
    assert [o.id for o in project.objects(image_id)] == [obj.id]  # the click's object is gone, the box untouched


def _forked(fn):
    """fn run in a forked child process, as ZeroGPU's spaces.GPU runs what it wraps; the result comes back."""
    import multiprocessing

    def call(*args, **kwargs):
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=lambda: send.send(fn(*args, **kwargs)))
        child.start()
        result = receive.recv()
        child.join()
        return result
    return call


def _disk(pixels, points, labels, box, mask=None, sam=None, store=None):
    """A stand-in for SAM in the forked worker (torch in a child forked from this threaded test process can hang;
    what is checked is what stays in the server's process): a disk of 8 px around the last click."""
    h_, w_ = np.asarray(pixels).shape[:2]
    yy, xx = np.mgrid[:h_, :w_]
    x, y = points[-1]
    return (xx - x) ** 2 + (yy - y) ** 2 <= 64


def test_on_zerogpu_only_sam_runs_in_the_worker_so_the_next_edit_knows_the_click(app, image):
    """The app wraps only SAM for ZeroGPU (a forked worker): what the click stored and what the window's order and
    views know stay in the server's process, so an edit sent right after the click on the same view passes."""
    state, project, image_id, obj = image
    app.order.wait_s = 30.0  # were the click's turn marked only in a worker, the next edit would wait this long
    a = Window(app, state, image_id, "window-a-0011")
    a.send("click", adopt=False, refine=_forked(_disk), object_id=obj.id, x=30.0, y=30.0, positive=True,
           class_name="cat")
    relabel = a.in_thread("relabel", object_ids=[obj.id], class_name="dog")
    relabel.join(10)
    assert not relabel.is_alive() and relabel.reply["message"] is None
    [stored] = project.objects(image_id)
    assert stored.class_name == "dog" and stored.clicks is not None


def test_each_reply_shows_its_edit_and_no_later_one(app, image, monkeypatch):
    """The reply to an edit is made before the window's next edit is applied, so it shows exactly the edits up to
    its own seq (the page draws later ones in flight itself; a reply showing them would draw them twice)."""
    import time

    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0012")
    real = h.canvas_state

    def slow_first_reply(app_, state_, image_id_, **kw):
        if kw.get("seq") == 1:
            time.sleep(1.0)  # the second edit arrives while the first reply is being made
        return real(app_, state_, image_id_, **kw)
    from ui.actions import canvas

    monkeypatch.setattr(canvas, "canvas_state", slow_first_reply)
    first = a.in_thread("move", object_id=obj.id, dx=5, dy=0)
    time.sleep(0.3)
    second = a.in_thread("move", object_id=obj.id, dx=5, dy=0)
    first.join(30)
    second.join(30)
    assert first.reply["objects"][0]["box"] == [15, 10, 55, 50]  # only the first move
    assert second.reply["objects"][0]["box"] == [20, 10, 60, 50]
    assert first.reply["revision"] < second.reply["revision"]


def test_another_writers_change_right_after_an_edit_is_not_taken_for_the_windows_own(app, image, monkeypatch):
    """What a window's edit made is read in its own transaction: a change by someone else committed just after
    it is not counted as the window's, so the window's next in-flight edit on the old view is refused."""
    from gdino.store import ObjectState

    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0013")
    real = project.edit_objects

    def then_another_writer(*args, **kwargs):
        out = real(*args, **kwargs)
        [now] = project.objects(image_id)
        real(image_id, {now.id: ObjectState(**{**ObjectState.of(now).__dict__, "class_name": "dog"})})
        return out
    monkeypatch.setattr(project, "edit_objects", then_another_writer)
    a.send("move", adopt=False, object_id=obj.id, dx=3, dy=0)
    monkeypatch.setattr(project, "edit_objects", real)
    reply = a.send("resize", adopt=False, object_id=obj.id, box=[0, 0, 30, 30])
    assert STALE in reply["message"]
    [stored] = project.objects(image_id)
    assert stored.class_name == "dog" and stored.box == (13, 10, 53, 50)


def test_a_state_that_comes_back_is_not_mistaken_for_the_windows_own_edit(app, image):
    """Window A moves a box; B undoes it; A is shown that; B redoes it (the state A's move once made). A's edit on
    what it was shown must not pass as if the redo were A's own in-flight move."""
    state, project, image_id, obj = image
    a, b = Window(app, state, image_id, "window-a-0014"), Window(app, state, image_id, "window-b-0014")
    a.send("move", object_id=obj.id, dx=5, dy=0)
    b.value = h.canvas_state(app, state, image_id)
    assert b.send("undo")["message"] is None
    a.value = h.canvas_state(app, state, image_id)  # A draws the box back where it was
    assert b.send("redo")["message"] is None  # the moved state again, made by B
    reply = a.send("resize", object_id=obj.id, box=[0, 0, 30, 30])
    assert STALE in reply["message"] and project.objects(image_id)[0].box == (15, 10, 55, 50)


def test_made_up_predecessors_tie_up_only_a_few_threads(app, image):
    """At most MAX_WAITING edits wait for a predecessor that has not arrived; beyond that an edit goes ahead."""
    from ui.edit_order import MAX_WAITING

    state, project, image_id, obj = image
    app.order.wait_s = 30.0
    try:
        waiting = [Window(app, state, image_id, f"window-w-{k:04d}") for k in range(MAX_WAITING)]
        threads = []
        for w in waiting:
            w.seq = 40  # the next edit names 40, which never comes
            threads.append(w.in_thread("move", object_id=obj.id, dx=0, dy=0))
        import time

        deadline = time.monotonic() + 120  # only against a hang: the threads reach their wait however busy the machine
        while app.order._waiting < MAX_WAITING and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.order._waiting == MAX_WAITING
        late = Window(app, state, image_id, "window-late-001")
        late.seq = 40
        go = late.in_thread("move", object_id=obj.id, dx=1, dy=0)
        go.join(10)
        assert not go.is_alive() and go.reply["message"] is None  # it did not wait
        assert all(t.is_alive() for t in threads)
    finally:
        app.order.wait_s = 0.0
        with app.order._changed:
            app.order._changed.notify_all()
        for t in threads:
            t.join(30)


def test_a_refused_edit_does_not_hold_up_the_next(app, image):
    """An edit answered at once (its image is gone) still ends its turn: the window's next edit does not wait."""
    state, project, image_id, obj = image
    app.order.wait_s = 30.0
    a = Window(app, state, image_id, "window-a-0015")
    gone = a.payload("move", object_id=obj.id, dx=1, dy=0)
    gone["image_id"] = image_id + 1000
    assert "not in this project" in h.canvas_edit(app, state, gone)[0]["message"]
    nxt = a.in_thread("move", object_id=obj.id, dx=1, dy=0)
    nxt.join(10)
    assert not nxt.is_alive() and nxt.reply["message"] is None


def test_a_busy_project_does_not_hold_up_another_projects_canvas(app, image, tmp_path):
    """A project whose lock is held (a long write, a CLI batch) delays only its own canvas values."""
    import threading

    state, project, image_id, obj = image
    other = Sessions.new_state()
    photo = tmp_path / "other.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(photo)
    h.add_uploads(app, other, [str(photo)])
    release = threading.Event()

    def hold():
        with project._lock:
            release.wait(30)
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        busy = threading.Thread(target=h.canvas_state, args=(app, state, image_id))
        busy.start()  # waits for its project
        value = h.canvas_state(app, other, h.current_image(app, other))
        assert value is not None and holder.is_alive() and busy.is_alive()  # answered while the other waits
    finally:
        release.set()
        holder.join(30)
        busy.join(30)


def test_a_refresh_read_before_an_edit_is_stamped_before_it(app, image, monkeypatch):
    """A value (a Next/Detect refresh of the same image) read just before an edit is written must get a lower
    revision than the edit's step, so that the window, drawing that value, can still make its next edit on
    the box: the stamp is taken under the project's lock, which the write waits for."""
    import threading
    import time

    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0016")
    real = project.view
    refresher, go = {}, threading.Event()

    def view_then_wait(*args, **kwargs):
        out = real(*args, **kwargs)
        if threading.current_thread() is refresher.get("thread"):
            go.wait(10)  # the move's write would happen here, were the stamp taken after the lock
        return out
    monkeypatch.setattr(project, "view", view_then_wait)
    refresh = threading.Thread(target=lambda: refresher.update(value=h.canvas_state(app, state, image_id)))
    refresher["thread"] = refresh
    refresh.start()
    time.sleep(0.2)
    move = a.in_thread("move", object_id=obj.id, dx=5, dy=0)
    time.sleep(0.5)
    go.set()
    refresh.join(10)
    move.join(10)
    assert move.reply["message"] is None
    a.value = refresher["value"]  # the page draws the refresh (it may reach the page before the move's answer)
    reply = a.send("resize", object_id=obj.id, box=[0, 0, 30, 30])
    assert reply["message"] is None and project.objects(image_id)[0].box == (0, 0, 30, 30)


def test_a_malformed_view_still_ends_its_turn(app, image):
    state, project, image_id, obj = image
    app.order.wait_s = 30.0
    a = Window(app, state, image_id, "window-a-0017")
    bad = a.payload("move", object_id=obj.id, dx=1, dy=0)
    bad["seen"] = "garbled"
    assert "reload the page" in h.canvas_edit(app, state, bad)[0]["message"]
    nxt = a.in_thread("move", object_id=obj.id, dx=1, dy=0)
    nxt.join(10)
    assert not nxt.is_alive() and nxt.reply["message"] is None


def test_the_rest_of_the_page_is_answered_in_the_edits_turn_too(app, image):
    """The image's line, the list and the counter are made with the canvas value, before the window's next edit."""
    import threading
    import time

    state, project, image_id, obj = image
    a = Window(app, state, image_id, "window-a-0018")
    seen_by_answer = {}

    def slow_answer(value, shown):
        seen_by_answer[value["seq"]] = [o.box for o in project.objects(shown)]
        if value["seq"] == 1:
            time.sleep(1.0)
            seen_by_answer["after the wait"] = [o.box for o in project.objects(shown)]
        return value, shown
    first_payload, second_payload = a.payload("move", object_id=obj.id, dx=5, dy=0), None
    first = threading.Thread(target=h.canvas_edit, args=(app, state, first_payload), kwargs={"answer": slow_answer})
    first.start()
    time.sleep(0.3)
    second_payload = a.payload("move", object_id=obj.id, dx=5, dy=0)
    h.canvas_edit(app, state, second_payload, answer=slow_answer)
    first.join(10)
    assert seen_by_answer[1] == seen_by_answer["after the wait"] == [(15, 10, 55, 50)]
    assert seen_by_answer[2] == [(20, 10, 60, 50)]


def test_the_memory_of_windows_is_bounded_least_recently_used_first():
    from collections import OrderedDict

    from ui.recent import put, recent

    table = OrderedDict()
    for token in ("a", "b", "c"):
        put(recent(table, token, 2), 1, True, 2)
    assert list(table) == ["b", "c"]  # "a", the least recently used, dropped
    recent(table, "b", 2)
    put(recent(table, "d", 2), 1, True, 2)
    assert list(table) == ["b", "d"]  # "b" was used again: "c" went
    inner = recent(table, "b", 2)
    for k in range(5):
        put(inner, k, k, 3)
    assert list(inner) == [2, 3, 4]
