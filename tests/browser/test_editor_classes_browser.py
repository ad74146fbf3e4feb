"""Issue 25, item 5: the class manager keeps its class menu after each of its actions (rename, merge, delete),
so the next action can name a class; and the "delete its objects too" tick does not stay on for the next
delete. Headless Chromium with the tiny models, real clicks and keys; checked in the PROJECT's store."""

import numpy as np
import pytest
from app_harness import fresh_page, needs_browser, profile, running_app
from PIL import Image

from gdino.store import ObjectState

pytestmark = needs_browser


@pytest.fixture(scope="module")
def server(tiny_hf, tmp_path_factory):
    with running_app(tiny_hf, tmp_path_factory.mktemp("classes_app")) as served:
        yield served


def menu(page) -> list[str]:
    """The class menu's choices, as the page offers them (opened, read, closed)."""
    page.locator("#class-old input").click()
    options = page.locator("li[role=option]")
    options.first.wait_for(timeout=10_000)
    names = [t.split("\n")[-1].strip() for t in options.all_inner_texts()]  # the chosen one has a tick first
    page.locator("#class-old input").blur()
    return names


def choose(page, name: str) -> None:
    page.locator("#class-old input").click()
    page.locator("li[role=option]", has_text=name).first.click()


def test_class_menu_keeps_its_choices_after_each_action(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, app = server
    photo = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(photo)
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            page.locator("#uploads input[type=file]").set_input_files([str(photo)])
            expect(page.locator("#image-info")).to_contain_text("street.png", timeout=60_000)
            [project] = app.sessions.open_projects()
            [image] = project.images()
            project.add_classes(["cat", "dog", "bird", "fish"])
            project.edit_objects(image.id, new=[ObjectState("cat", (10, 10, 60, 60)), ObjectState("fish", (70, 10, 120, 60))])
            page.locator("#next-btn").click()  # the page reads the classes again
            page.locator("#class-manager").get_by_text("Classes").first.click()
            expect(page.locator("#class-table")).to_contain_text("fish", timeout=30_000)
            assert menu(page) == ["cat", "dog", "bird", "fish"]
            chosen = page.locator("#class-old input")

            choose(page, "dog")  # rename: the menu keeps its choices and shows the new name chosen
            page.locator("#class-new textarea, #class-new input").first.fill("hound")
            page.locator("#rename-class-btn").click()
            expect(page.locator("#message")).to_contain_text("renamed", timeout=30_000)
            assert project.classes == ["cat", "hound", "bird", "fish"]
            expect(chosen).to_have_value("hound")
            assert menu(page) == ["cat", "hound", "bird", "fish"]
            page.locator("#delete-class-btn").click()  # Delete right after: the renamed class (unused) goes
            expect(page.locator("#message")).to_contain_text("deleted the class 'hound'", timeout=30_000)
            assert project.classes == ["cat", "bird", "fish"]
            assert menu(page) == ["cat", "bird", "fish"]
            page.locator("#delete-class-btn").click()  # nothing chosen now: said so, nothing deleted
            expect(page.locator("#message")).to_contain_text("choose a class", timeout=30_000)
            assert "None" not in page.locator("#message").inner_text()
            assert project.classes == ["cat", "bird", "fish"]

            choose(page, "fish")  # delete a class with its objects
            tick = page.get_by_label("delete its objects too")
            tick.check()
            page.locator("#delete-class-btn").click()
            expect(page.locator("#message")).to_contain_text("and its 1 object(s)", timeout=30_000)
            assert project.classes == ["cat", "bird"]
            assert [o.class_name for o in project.objects(image.id)] == ["cat"]
            expect(tick).not_to_be_checked()  # the next delete does not take objects unless ticked again
            assert menu(page) == ["cat", "bird"]

            choose(page, "cat")  # so deleting a used class now is refused, its objects kept
            page.locator("#delete-class-btn").click()
            expect(page.locator("#message")).to_contain_text("1 object(s) use the class", timeout=30_000)
            assert project.classes == ["cat", "bird"] and len(project.objects(image.id)) == 1
            expect(chosen).to_have_value("cat")  # still chosen: tick the box and delete again
        finally:
            context.close()
