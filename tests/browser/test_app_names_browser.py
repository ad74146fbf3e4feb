"""Names are text (issue 24, item 1), in headless Chromium: visitor A uploads a zip whose images and classes are
named like markup (a Markdown image, raw <img>, <script>, <iframe>, an autolink, a link, LaTeX), and shares the
project link; visitor B opens it and browses every image and the classes. Local listeners stand where those names
point: they must receive nothing, no element of either page may point at them, and the page shows each name as
the text it is. And the helper that makes such text Markdown (ui/text.py), rendered by a CommonMark parser."""

import io
import json
import random
import socket
import threading
import zipfile

import numpy as np
import pytest
from app_harness import fresh_page, needs_browser, profile
from PIL import Image
from test_app_browser import server  # noqa: F401  (the fixture)

from ui.text import bold, lines, plain

HOSTILE = ["![b](https:127.0.0.1:9995).png", "<img src=http:127.0.0.1:9996>.png", "<script>alert(1)</script>",
           "<http://127.0.0.1:1/x>", "<iframe src=http://x>", "[x](http://127.0.0.1:2)", "[x]: http://y", "[x]",
           "$$\\href{http://z}{k}$$", "www.example.com", "a@b.com", "http://127.0.0.1:3/a.png", "`code`", "~~s~~",
           "*em* _em_ **b**", "# heading", "- item", "1. item", "> quote", "a | b", "---", "===", "&lt;img&gt;",
           "&#60;img&#62;", "\\<img src=x>", "line\nbreak", "cr\rlf", "tab\there", "nul\x00 bell\x07 del\x7f",
           "rtl\u202eexe.png", "sep\u2028x\u2029y", "lone \ud800 surrogate", "    indented", "trailing  ", "  ",
           "\u00a0nbsp", "🐱 cat", "naïve ☃", ""]


def rendered(markdown: str) -> str:
    """HTML of CommonMark (with GFM tables and strikethrough), as gradio's parser would make it of this text."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def as_text(value: str) -> str:
    """The HTML of `value` shown as text in a paragraph, control characters written as their escapes."""
    shown = "".join({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (
        f"\\x{ord(c):02x}" if ord(c) < 32 or 0x7f <= ord(c) < 0xa0 else
        f"\\u{ord(c):04x}" if c in "\u202e\u2028\u2029\ud800" else c) for c in value)
    escaped = shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return f"<p>{escaped}</p>\n" if value else ""


@pytest.mark.parametrize("value", HOSTILE)
def test_plain_renders_as_its_own_text(value):
    assert rendered(plain(value)) == as_text(value)


def test_plain_renders_any_mix_of_punctuation_as_text():
    rng = random.Random(24)
    alphabet = "abc 019:/.@<>[]()!*_`~#|-=+&;\\\"'$%^{}?,\n\x01"
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        assert rendered(plain(value)) == as_text(value), value
        assert "://" not in plain(value) and "www." not in plain(value) and "@" not in plain(value).replace("\\@", "")


def test_lines_keeps_our_list_and_shows_each_line_as_text():
    message = "added 1 image(s); not added:\n- <img src=http://x>.png: bad\n- [a](http://y): worse"
    assert rendered(lines(message)) == ("<p>added 1 image(s); not added:</p>\n<ul>\n<li>&lt;img src=http://x&gt;.png: "
                                        "bad</li>\n<li>[a](http://y): worse</li>\n</ul>\n")
    assert rendered(bold("no class '<b>x</b>' ")) == "<p><strong>no class '&lt;b&gt;x&lt;/b&gt;'</strong></p>\n"


class Listener:
    """A TCP port on 127.0.0.1 that records every connection made to it (a thread accepts)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.reached = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            self.reached.set()
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def listeners():
    made = [Listener() for _ in range(13)]
    yield made
    for listener in made:
        listener.close()


def hostile_names(ports):
    """Image names (inside a zip) and class names that are markup pointing at `ports` (one port each)."""
    images = [f"![b](https:127.0.0.1:{ports[0]}).png", f"<img src=http:127.0.0.1:{ports[1]}>.png",
              f"<script src=http:127.0.0.1:{ports[2]}>.png", f"<http:127.0.0.1:{ports[3]}>.png",
              f"<iframe src=http:127.0.0.1:{ports[4]}>.png", f"[x](http:127.0.0.1:{ports[5]}).png",
              f"a\n<img src=http:127.0.0.1:{ports[6]}>.png", f"<img srcset=http:127.0.0.1:{ports[7]}>.png",
              "$$x^2$$ *em* # c\x01d.png"]
    classes = [f"<img src=http://127.0.0.1:{ports[8]}>", f"![c](http://127.0.0.1:{ports[9]}/c.png)",
               f"$$\\href{{http://127.0.0.1:{ports[10]}}}{{k}}$$"]
    return images, classes


def coco_zip(path, images, classes, missing=None):
    """A COCO dataset zip: the images (one box each, of the classes in turn); `missing`: one it lists but lacks
    (the whole zip is refused then)."""
    coco = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}
    with zipfile.ZipFile(path, "w") as archive:
        for k, name in enumerate(images):
            buf = io.BytesIO()
            Image.fromarray(np.random.default_rng(k).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
            archive.writestr(name, buf.getvalue())
            coco["images"].append({"id": k + 1, "file_name": name, "width": 64, "height": 48})
            coco["annotations"].append({"id": k + 1, "image_id": k + 1, "category_id": k % len(classes) + 1,
                                        "bbox": [4, 4, 30, 20], "area": 600, "iscrowd": 0})
        if missing is not None:
            coco["images"].append({"id": len(images) + 1, "file_name": missing, "width": 64, "height": 48})
        archive.writestr("instances.json", json.dumps(coco))
    return path


def shown(name: str) -> str:
    """How the page writes a name: control characters and newlines as their escapes."""
    return name.replace("\n", "\\n").replace("\x01", "\\x01")


# the elements of a page that point at a listener (a fetch, a frame, a link), by port
POINTING = """ports => [...document.querySelectorAll('*')].flatMap(el => [...el.attributes]
  .filter(a => ['src', 'srcset', 'href', 'poster', 'data', 'action', 'style'].includes(a.name)
               && ports.some(p => a.value.includes('127.0.0.1:' + p)))
  .map(a => el.outerHTML.slice(0, 200)))"""


@needs_browser
def test_markup_names_are_text_for_a_second_visitor(server, listeners, tmp_path):  # noqa: F811  (the fixture)
    from playwright.sync_api import sync_playwright

    url, app = server
    *hostile, control = listeners
    ports = [listener.port for listener in hostile]
    images, classes = hostile_names(ports)
    missing = f"<img src=http:127.0.0.1:{ports[-1]}>.jpg"
    archive = coco_zip(tmp_path / "shared.zip", images, classes)
    refused = coco_zip(tmp_path / "refused.zip", images[:1], classes, missing)
    with sync_playwright() as pw:
        a_context, b_context = profile(pw, tmp_path / "a"), profile(pw, tmp_path / "b")
        try:
            a = fresh_page(a_context, url)
            a.locator("#uploads input[type=file]").set_input_files([str(archive)])
            a.wait_for_selector(f"#message >> text=added {len(images)} image(s)", timeout=60_000)
            a.locator("#uploads input[type=file]").set_input_files([str(refused)])
            a.wait_for_selector("#message >> text=added 0 image(s)", timeout=60_000)
            assert missing in a.locator("#message").inner_text()  # its own note names the missing file as it is
            [project] = app.sessions.open_projects()
            # stored as given, except a line break or control character: '_' (a name is one line of text)
            assert sorted(r.name for r in project.images()) == sorted(n.replace("\n", "_").replace("\x01", "_")
                                                                      for n in images)
            assert set(classes) <= set(project.classes)
            link = a.locator("#project-link textarea, #project-link input").first.input_value()

            b = b_context.new_page()
            b.goto(link, wait_until="load")
            b.wait_for_selector("#message >> text=Opened the project from its link", timeout=60_000)
            ordered = [r.name for r in project.images(order="name")]
            for k, name in enumerate(ordered):
                if k:
                    b.locator("#next-btn").click()
                b.wait_for_function("n => document.querySelector('#image-info').innerText.includes(n)",
                                    arg=shown(name), timeout=30_000)
                # the canvas drew that image: its boxes, labeled with the class names
                b.wait_for_function("id => document.querySelector('.gc-root')?.dataset.imageId === String(id)",
                                    arg=project.find_image(name).id, timeout=30_000)
            table = b.locator("#image-table").inner_text()
            assert all(name in table for name in ordered), table
            b.locator("#class-manager").get_by_text("Classes").first.click()
            b.wait_for_function("n => document.querySelector('#class-table')?.innerText.includes(n)",
                                arg=classes[0], timeout=30_000)
            class_table = b.locator("#class-table").inner_text()
            assert all(c in class_table for c in classes), class_table
            b.locator("#class-old input").click()  # the class menu lists them, as text
            b.wait_for_selector("li[role=option]", timeout=30_000)
            options = b.locator("li[role=option]").all_inner_texts()
            assert set(classes) <= {o.strip() for o in options}, options
            canvas_menu = b.evaluate("() => [...document.querySelectorAll('#canvas .gc-class option')].map(o => o.text)")
            assert all(any(o.endswith(c) for o in canvas_menu) for c in classes), canvas_menu

            for page in (a, b):
                assert page.evaluate(POINTING, ports) == []
            # a fetch the test makes itself reaches its listener: the listeners work, and the browser has made
            # the requests it was going to make before this one
            b.evaluate("p => { const i = new Image(); i.src = 'http://127.0.0.1:' + p + '/control.png'; }",
                       control.port)
            assert control.reached.wait(30)
            assert {listener.port: listener.connections for listener in hostile if listener.connections} == {}
        finally:
            a_context.close()
            b_context.close()
