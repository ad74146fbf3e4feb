"""Two windows on one image, in Chromium with real pointer events: a box moved in one window and then dragged
in a second window that still shows it where it was is refused there (the page says so and redraws what is
stored); the first window's edit stays in the project. On the redrawn view the second window's edit goes through.
Quick edits within one window are covered by the other canvas tests (they must not count as stale)."""

from app_harness import fresh_page, hold_ticks, needs_browser, profile
from test_canvas_app_browser import ROOT, View, drag, near, server, until  # noqa: F401  (the fixture)

from gdino.store import ObjectState
from ui.edit_order import WAIT_S

pytestmark = needs_browser


def _upload(context, url, app, photo, classes):
    """A new visitor's tab with the photo uploaded -> (the tab, its project, the image, a box on it in the first
    class)."""
    earlier = {p.path for p in app.sessions.open_projects()}
    page = fresh_page(context, url)
    page.locator("#uploads input[type=file]").set_input_files([str(photo)])
    page.wait_for_selector("#image-info >> text=rotated.jpg", timeout=60_000)
    project = next(p for p in app.sessions.open_projects() if p.path not in earlier and p.images())
    [image] = project.images()
    project.add_classes(classes)
    (obj,) = project.edit_objects(image.id, new=[ObjectState(classes[0], (1000, 1000, 2000, 2000), source="manual")])
    return page, project, image, obj


def test_a_stale_window_cannot_overwrite_another_windows_edit(server, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, app, photo = server
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")  # one browser: both tabs open its project
        try:
            first, project, image, _ = _upload(context, url, app, photo, ["cat"])
            second = context.new_page()
            second.goto(url, wait_until="load")
            pages = (first, second)
            first.locator("#next-btn").click()  # the first tab shows the box too
            for page in pages:
                page.wait_for_selector(ROOT + "[data-image-ready='1'][data-visible-boxes='1']", timeout=60_000)
                page.locator("#canvas canvas.gc-canvas").scroll_into_view_if_needed()
            views = [View(page) for page in pages]
            held = hold_ticks(second, url)  # the second tab keeps its view (ticks now show other windows' changes)
            until(second, lambda: held, "a held tick of the second tab")  # none of its ticks is in flight any more

            def stored():
                return project.objects(image.id)[0].box

            # the first tab moves the box 500 px right
            drag(first, views[0].page(1500, 1500), views[0].page(2000, 1500))
            moved = until(first, lambda: stored()[0] > 1200 and stored(), "the first tab's move")
            assert near(moved, (1500, 1000, 2500, 2000), tol=2 / views[0].s)

            # the second tab still shows it at 1000..2000 and drags it 500 px down from there
            drag(second, views[1].page(1500, 1500), views[1].page(1500, 2000))
            second.wait_for_selector(ROOT + " .gc-message >> text=changed in another window", timeout=20_000)
            second.wait_for_selector(ROOT + "[data-pending='0']", timeout=10_000)
            assert stored() == moved  # the first tab's edit stands

            # the second tab now draws the box where it is stored: dragging it there moves it
            drag(second, views[1].page(2000, 1500), views[1].page(2000, 2000))
            until(second, lambda: stored()[1] > 1200, "the second tab's move on the fresh view")
            assert near(stored(), (moved[0], moved[1] + 500, moved[2], moved[3] + 500), tol=2 / views[1].s)
            assert len(project.objects(image.id)) == 1
        finally:
            context.close()


def test_edits_that_reach_the_server_out_of_order_are_stored_in_the_order_made(server, tmp_path):  # noqa: F811
    """Each edit is its own request; the network can deliver a later one first. Here the test holds back the
    request of the first of two quick relabels until the second has reached the server: the project ends with
    the class chosen last, and its history has them in the order made."""
    from playwright.sync_api import sync_playwright

    url, app, photo = server
    app.order.wait_s = 30.0  # however busy this machine is, the second edit waits for the held-back first one
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page, project, image, box = _upload(context, url, app, photo, ["cat", "dog", "bird"])
            page.locator("#next-btn").click()
            page.wait_for_selector(ROOT + "[data-image-ready='1'][data-visible-boxes='1']", timeout=60_000)
            page.locator("#canvas canvas.gc-canvas").scroll_into_view_if_needed()
            view = View(page)
            page.mouse.click(*view.page(1500, 1500))
            page.wait_for_selector(f"{ROOT}[data-selected='{box.id}']", timeout=10_000)

            held, passed = [], []

            def hold_the_first(route):
                body = route.request.post_data or ""
                if "relabel" in body and "dog" in body and not held:
                    held.append(route)  # the first edit's request waits here
                else:
                    passed.append(body)
                    route.continue_()
            page.route("**/queue/join*", hold_the_first)
            page.keyboard.press("2")  # dog
            page.wait_for_timeout(25)
            page.keyboard.press("3")  # bird
            for _ in range(100):  # the second relabel has gone to the server
                if held and any("bird" in b for b in passed):
                    break
                page.wait_for_timeout(50)
            assert held and any("bird" in b for b in passed), "the test could not hold back the first edit"
            page.wait_for_timeout(300)  # it is at the server before the first
            held[0].continue_()
            until(page, lambda: project.objects(image.id)[0].class_name == "bird" and
                  page.locator(ROOT).get_attribute("data-pending") == "0", "both relabels")
            assert project.objects(image.id)[0].class_name == "bird"  # the class chosen last
            assert project.undo(image.id) and project.objects(image.id)[0].class_name == "dog"
            assert project.undo(image.id) and project.objects(image.id)[0].class_name == "cat"
        finally:
            context.close()
            app.order.wait_s = WAIT_S
