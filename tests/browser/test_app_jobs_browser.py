"""Two visitors in Chromium while one runs *Auto-label all* over 40 images (the tiny models): the other's
Detect answers while the job is still running, between two of its images, and the first reviews images
during the job with the page's own buttons; what the project stores is checked, not only the page."""

import numpy as np
from app_harness import fresh_page, needs_browser, profile
from PIL import Image
from test_app_browser import server  # noqa: F401  (the fixture)

from gdino.store import ObjectState

pytestmark = needs_browser

N_IMAGES = 40


def _photos(folder, n, seed):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"shot{i:02d}.png"
        Image.fromarray(np.random.default_rng(seed * 1000 + i).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_a_job_leaves_other_visitors_and_its_owner_free(server, tmp_path):  # noqa: F811  (the imported fixture)
    from playwright.sync_api import sync_playwright

    url, app = server
    with sync_playwright() as pw:
        contexts = [profile(pw, tmp_path / f"profile{k}") for k in range(2)]
        try:
            a, b = (context.new_page() for context in contexts)
            for page, n, seed in ((a, N_IMAGES, 1), (b, 1, 2)):
                page.goto(url, wait_until="load")
                page.wait_for_selector("#image-info >> text=No images yet", timeout=60_000)
                page.locator("#uploads input[type=file]").set_input_files(_photos(tmp_path / f"up{seed}", n, seed))
                page.wait_for_function("document.querySelector('#image-table').innerText.includes('shot00.png')",
                                       timeout=120_000)
                page.locator("#classes textarea, #classes input").first.fill("cat, remote control")
            projects = {p.path: p for p in app.sessions.open_projects()}
            project_a = next(p for p in projects.values() if len(p.images()) == N_IMAGES)

            a.locator("#auto-all-btn").click()
            a.wait_for_selector(f"#job-status >> text=/ {N_IMAGES} image(s)", timeout=60_000)
            job = app.jobs.get(project_a.path)
            while job.done < 2:
                a.wait_for_timeout(50)

            # the other visitor's Detect is answered while the job still has most of its images to do
            b.locator("#detect-btn").click()
            b.wait_for_selector("#message >> text=found", timeout=120_000)
            assert job.running and job.done < N_IMAGES - 5, f"Detect waited for the job ({job.done}/{N_IMAGES})"

            # the owner reviews while the job runs: the page is not covered, its buttons work
            a.locator("#image-info").click()
            last = project_a.images(order="name")[-1]
            a.locator("#prev-btn").click()  # from the first image, Prev wraps around to the last
            a.wait_for_selector(f"#image-info >> text={last.name}", timeout=30_000)
            a.locator("#reviewed-btn").click()
            a.wait_for_selector("#counter >> text=1 /", timeout=30_000)
            assert job.running, "the job ended before the review could be made during it"
            assert project_a.image(last.id).status == "reviewed"

            a.wait_for_selector("#job-status >> text=done", timeout=300_000)
            assert project_a.image(last.id).status == "reviewed" and project_a.image(last.id).num_objects == 0
            assert len(project_a.images(status="auto")) == N_IMAGES - 1
        finally:
            for context in contexts:
                context.close()


def test_train_on_reviewed_images_then_use_the_model_in_the_page(server, tmp_path):  # noqa: F811
    """The training panel: start, follow the job line, use the model; the project stores the choice and the
    Model menu shows it after a reload."""
    from playwright.sync_api import sync_playwright

    url, app = server
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            page.locator("#uploads input[type=file]").set_input_files(_photos(tmp_path / "up", 4, 3))
            page.wait_for_function("document.querySelector('#image-table').innerText.includes('shot03.png')",
                                   timeout=120_000)
            [project] = app.sessions.open_projects()
            project.add_classes(["cat"])
            for k, record in enumerate(project.images(order="name")):  # a person's boxes, reviewed
                project.edit_objects(record.id, new=[ObjectState("cat", [4 + k, 6, 30, 40])])
                project.set_status(record.id, "reviewed")

            page.locator("#train-panel .label-wrap").first.click()
            page.locator("#train-epochs input").fill("2")
            page.locator("#train-fast input").check()
            page.locator("#train-btn").click()
            page.wait_for_selector("#job-status >> text=training: epoch", timeout=60_000)
            page.wait_for_selector("#job-status >> text=training done", timeout=300_000)
            assert "held-out mAP@0.5" in page.locator("#job-status").inner_text()
            page.locator("#use-model-btn").click()
            page.wait_for_selector("#message >> text=now uses fine-tuned here", timeout=30_000)
            chosen = project.setting("model")
            assert chosen.startswith("models/finetuned-") and (project.path / chosen / "config.json").is_file()

            page.reload(wait_until="load")
            page.wait_for_selector("#image-info >> text=shot", timeout=60_000)
            page.wait_for_function("document.querySelector('#model-choice input').value.startsWith('fine-tuned here')",
                                   timeout=30_000)
        finally:
            context.close()
