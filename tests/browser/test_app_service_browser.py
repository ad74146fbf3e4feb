"""Projects that last (issue 14), in headless Chromium: a project uploaded in one browser is there again
after a real server restart (same browser profile), opens from its project link in a fresh profile, and
a forged project id or link gets a message in the page, never an error."""

import json

import numpy as np
import pytest
from app_harness import free_port, needs_browser, profile, start
from PIL import Image
from tiny_sam import save_tiny_sam

from ui.session import valid_token

pytestmark = needs_browser


def stop(demo, app):
    demo.close()
    app.sessions.close()


def loaded(page, url):
    page.goto(url, wait_until="load")
    page.wait_for_function("() => document.querySelector('#project-link textarea, #project-link input')?.value",
                           timeout=60_000)  # the page load has run


def reopen(context, page, url):
    """The same browser (profile) shows the page again after the server came back. A reload while the
    old page's connection is being torn down can find the page detached (seen once in a full run);
    then the same profile opens the address in a new tab, which is what a person would do."""
    from playwright.sync_api import Error

    try:
        page.reload(wait_until="load")
        return page
    except Error as err:
        if "Not attached" not in str(err):
            raise
    page = context.new_page()
    page.goto(url, wait_until="load")
    return page


def listed(page, name, timeout=30_000):
    """Wait until the image list shows `name`."""
    page.wait_for_function("n => document.querySelector('#image-table')?.innerText.includes(n)", arg=name,
                           timeout=timeout)


def link_of(page):
    return page.locator("#project-link textarea, #project-link input").first.input_value()


@pytest.fixture
def server_args(tiny_hf, tmp_path):
    # one port for both starts: the browser keeps the stored project id per origin (host and port)
    return ["--model", str(tiny_hf[1]), "--sam", str(save_tiny_sam(tmp_path / "sam.pth")),
            "--workspace", str(tmp_path / "ws"), "--port", str(free_port())]


def test_a_project_survives_a_restart_and_opens_from_its_link(server_args, tmp_path):
    from playwright.sync_api import sync_playwright

    picture = tmp_path / "kept.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(picture)
    demo, app = start(server_args)
    try:
        with sync_playwright() as pw:
            first = profile(pw, tmp_path / "profile-1")
            page = first.new_page()
            loaded(page, demo.local_url)
            page.locator("#uploads input[type=file]").set_input_files([str(picture)])
            listed(page, "kept.png", 60_000)
            [project] = app.sessions.open_projects()
            token = project.path.name
            page.wait_for_function("() => document.querySelector('#project-link textarea, #project-link input')"
                                   "?.value.includes('?project=')", timeout=30_000)  # shown once the upload made it
            link = link_of(page)
            assert link == f"{demo.local_url}?project={token}"

            # a real restart: the server goes away, a new one starts on the same workspace and port
            stop(demo, app)
            demo, app = start(server_args)
            page = reopen(first, page, demo.local_url)
            listed(page, "kept.png", 60_000)
            assert [p.path.name for p in app.sessions.open_projects()] == [token]
            first.close()

            # a fresh browser profile (nothing stored), opened from the link: the same project
            second = profile(pw, tmp_path / "profile-2")
            page = second.new_page()
            loaded(page, link)
            listed(page, "kept.png", 30_000)
            page.wait_for_selector("#message >> text=Opened the project from its link", timeout=10_000)
            assert link_of(page) == link
            page.wait_for_function("() => !location.search.includes('project=')", timeout=10_000)  # out of sight
            page.reload(wait_until="load")  # the profile now keeps the linked project by itself
            listed(page, "kept.png", 30_000)

            # a link to no project: a message, and this browser's project stays
            loaded(page, f"{demo.local_url}?project={'x' * 24}")
            page.wait_for_selector("#message >> text=This project link is not valid", timeout=10_000)
            listed(page, "kept.png", 10_000)
            assert link_of(page) == link
            second.close()
    finally:
        stop(demo, app)


def test_a_forged_project_id_gets_a_message_not_an_error(server_args, tmp_path):
    """What an attacker's page sends: every request's stored session rewritten to a token that names a
    path outside the workspace."""
    from playwright.sync_api import sync_playwright

    demo, app = start(server_args)
    forged = {"token": "../../../../etc/passwd", "opened": None, "image_id": None}

    def rewrite(route):
        body = json.loads(route.request.post_data or "{}")
        body["data"] = [forged if isinstance(v, dict) and "token" in v else v for v in body.get("data", [])]
        route.continue_(post_data=json.dumps(body))

    try:
        with sync_playwright() as pw:
            context = profile(pw, tmp_path / "profile")
            page = context.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            loaded(page, demo.local_url)
            page.route("**/queue/join*", rewrite)
            page.reload(wait_until="load")  # the load gets the forged id: a new project, and a note
            page.wait_for_selector("#message >> text=was not valid, so a new, empty project was started",
                                   timeout=30_000)
            page.locator("#next-btn").click()  # an event with the forged id: reload the page
            page.wait_for_selector("#message >> text=project id is not valid; reload the page", timeout=30_000)
            assert page.locator(".toast-body.error, .error-message").count() == 0
            assert all(p.name == ".secret" or valid_token(p.name) for p in (tmp_path / "ws").iterdir())
            context.close()
    finally:
        stop(demo, app)
