"""One rule for class names (gdino/checks.py `class_name_problem`), at every entry: the store (so the
canvas, the class manager, imports and result rows are covered), the prompt (the API, the app's class box and
`gdino label --classes`), each refusing in its own words; and exports that every reader reads back exactly:
PyYAML and an Ultralytics-style reader for data.yaml, ElementTree for VOC, pycocotools for COCO, and our own
import (a round trip). A name with no letters (an emoji) is a class for boxes drawn by hand; the prompt says
why the model cannot look for it and how to give it words."""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gdino.checks import CLASS_NAME_MAX_CHARS, as_class_name, class_name_problem
from gdino.cli import main
from gdino.labeling import LabelSettings, parse_class_text, store_objects
from gdino.masks import mask_to_rle
from gdino.prompts import PromptError, build_chunks, parse_classes
from gdino.store import NewImage, ObjectState, Project, ProjectError

W, H = 64, 48

# names the rule takes, chosen to trip YAML (quotes, flow and block indicators, tags, anchors, typed-looking
# scalars), XML (markup) and line-based formats; the emoji ones have no letters (item 12)
ALLOWED = ['say "hi"', "it's", "back\\slash", "a & b <c>", "#hash", "- dash", "? query", ": colon", "a: b",
           "[list]", "{map}", "*star", "&anchor", "!tag", "%percent", "@at", "`tick`", "|pipe", ">fold", "null",
           "true", "1.5", "0x1F", "~", "café", "猫", "مرحبا", "nb\xa0space", "🐱", "👨\u200d👩\u200d👧",
           "x" * CLASS_NAME_MAX_CHARS]
REFUSED = {  # name -> what the refusal says
    "cat\ndog": r"holds a line break \(U\+000A\)", "cat\r\ndog": r"line break \(U\+000D\)",
    "a\x01b": r"control character \(U\+0001\)", "tab\there": r"a tab \(U\+0009\)", "del\x7f": r"control character",
    "nel\x85x": r"line break \(U\+0085\)", "ls\u2028x": r"line break \(U\+2028\)", "ps\u2029x": r"line break",
    "vt\x0bx": r"line break", "nul\x00x": r"control character \(U\+0000\)", "lone\ud800": r"lone surrogate \(U\+D800\)",
    "\u202egnp.exe": r"bidirectional control", "non\ufffe": r"noncharacter \(U\+FFFE\)", "non\ufdd0": r"noncharacter",
    "x" * (CLASS_NAME_MAX_CHARS + 1): r"is 201 characters long; the limit is 200",
    "m" * 5_000_000: r"is 5000000 characters long",  # what the canvas stored before
}
REFUSED_IDS = [re.sub(r"\W", "_", ascii(n[:12]))[:20] for n in REFUSED]


def picture(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "p", ["cat"]) as p:
        p.add_image(picture(tmp_path / "a.png"))
        yield p


def stored(project) -> tuple:
    """Everything a refusal must leave as it was."""
    with sqlite3.connect(project.path / "project.sqlite") as db:
        return (db.execute("SELECT id, name, kind, position FROM classes ORDER BY id").fetchall(),
                db.execute("SELECT id, class_id, source FROM objects ORDER BY id").fetchall())


# -- the rule ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALLOWED)
def test_the_rule_takes_any_one_line_name(name, project):
    assert class_name_problem(name) is None
    assert project.add_classes([name]) == [name]
    (obj,) = project.edit_objects(project.images()[0].id, new=[ObjectState(name, (1, 1, 9, 9))])
    assert obj.class_name == name


@pytest.mark.parametrize("name", list(REFUSED), ids=REFUSED_IDS)
def test_every_store_entry_refuses_what_the_rule_refuses(name, project, tmp_path):
    """The store is the last line: every way a name gets in (create, add, set, rename, a phrase mapped, an import's
    classes, a model run's classes and phrases, the canvas's edits) refuses it, in words that read in the app
    and the command line alike, naming the name without echoing a megabyte; nothing changes."""
    pattern = REFUSED[name]
    assert re.search(pattern, class_name_problem(name))
    image_id = project.images()[0].id
    (cat,) = project.edit_objects(image_id, new=[ObjectState("cat", (1, 1, 9, 9))])
    before = stored(project)
    attempts = [
        lambda: Project.create(tmp_path / "new", ["dog", name]),
        lambda: project.add_classes([name]),
        lambda: project.set_classes(["cat", name]),
        lambda: project.rename_class("cat", name),
        lambda: project.add_labeled([NewImage(tmp_path / "a.png", "b.png", W, H, "reviewed",
                                              ({"box": (1, 1, 9, 9), "class_name": name},))], [name]),
        lambda: project.replace_model_objects(image_id, [{"box": (1, 1, 9, 9), "class_name": name, "score": 0.5}],
                                              classes=[name]),
        lambda: project.replace_model_objects(image_id, [{"box": (1, 1, 9, 9), "class_name": name, "score": 0.5}],
                                              phrases=[name]),
        lambda: project.edit_objects(image_id, new=[_state(name)]),  # the canvas: a new box
        lambda: project.edit_objects(image_id, {cat.id: _state(name)}, expect=[cat]),  # the canvas: a relabel
    ]
    for attempt in attempts:
        with pytest.raises(ProjectError) as refused:
            attempt()
        message = str(refused.value)
        assert re.search(pattern, message) and len(message) < 400, message
        assert "one line of text of at most 200 characters" in message
    assert stored(project) == before and not (tmp_path / "new").exists()


def _state(name):
    from gdino.store import ObjectState

    return ObjectState(name, (2.0, 2.0, 10.0, 10.0))


def test_a_found_phrase_with_a_line_break_is_stored_on_one_line(project):
    """Free text: a phrase is a piece of the prompt, and the prompt may hold a line break or a tab between
    the words found; the run stores it as one line, never fails on it."""
    image_id = project.images()[0].id
    found = [{"box": [1, 1, 9, 9], "class_name": "red\ncar", "score": 0.9, "mask": None},
             {"box": [2, 2, 9, 9], "class_name": "big\t\x01 dog", "score": 0.8, "mask": None}]
    assert store_objects(project, image_id, found, LabelSettings(prompt="red\ncar . big\t\x01 dog"), keep_phrases=True)
    assert sorted(project.phrases) == ["big dog", "red car"]
    assert as_class_name("x" * 500) == "x" * CLASS_NAME_MAX_CHARS and as_class_name(" a \u2028 b ") == "a b"


# -- the prompt: the API, the app's class box, --classes ----------------------------------------------------


@pytest.mark.parametrize("name", list(REFUSED), ids=REFUSED_IDS)
def test_the_prompt_refuses_in_its_own_words(name):
    with pytest.raises(PromptError, match=r"^class name .*" + REFUSED[name]):
        parse_classes(["cat", name])
    if len(name) <= CLASS_NAME_MAX_CHARS:  # a synonym: the characters, not the length (the model's, in tokens)
        with pytest.raises(PromptError, match=r"^prompt phrase of class 'cat' .*" + REFUSED[name]):
            parse_classes({"cat": ["cat", name]})


def test_an_emoji_is_a_label_the_model_cannot_look_for_until_it_has_words(tokenizer, project):
    """Item 12, decided: the store takes any name the rule allows (a class for boxes drawn by hand); the prompt
    refuses a name without letters or digits, saying why and how to keep it as the label."""
    with pytest.raises(PromptError) as refused:
        parse_classes(["cat", "🐱"])
    assert str(refused.value) == ("class name '🐱' has no letters or digits, so the model cannot look for it (it reads "
                                  "words); keep it as the label and give it words to find: '🐱: some words' in a class "
                                  "list ({'🐱': ['some words']} from Python)")
    prompt = parse_classes(parse_class_text("🐱: cat; dog"))  # the app's class box and --classes
    assert prompt.labels == ("🐱", "dog") and prompt.phrases == ("cat", "dog")
    assert len(build_chunks(prompt, tokenizer)[0].spans) == 2
    image_id = project.images()[0].id
    found = [{"box": [1, 1, 9, 9], "class_name": "🐱", "score": 0.9, "mask": None}]
    assert store_objects(project, image_id, found, LabelSettings(classes={"🐱": ["cat"]}))
    assert project.classes == ["cat", "🐱"] and project.objects(image_id)[0].class_name == "🐱"


def test_the_command_line_refuses_a_class_in_the_words_of_classes(tmp_path, capsys):
    picture(tmp_path / "in" / "a.png")
    for classes, said in [("cat, a\x01b", r"--classes: class name 'a\\x01b' holds a control character \(U\+0001\)"),
                          ("cat, 🐱", r"--classes: class name '🐱' has no letters or digits.*'🐱: some words'"),
                          ("x" * 201, r"--classes: class name 'x+'\.\.\. is 201 characters long")]:
        code = main(["label", str(tmp_path / "in"), "--classes", classes, "--out", str(tmp_path / "p"), "--model",
                     "nowhere"])
        err = capsys.readouterr().err
        assert code == 2 and re.search(r"^gdino label: error: " + said, err), err
        assert err.count("\n") == 1 and not (tmp_path / "p").exists()


# -- exports: every reader gets every allowed name back exactly ----------------------------------------------


def labeled_project(root: Path, classes: list[str]) -> Path:
    with Project.create(root / "p", classes) as p:
        for k in range(2):
            image = p.add_image(picture(root / f"img{k}.png", k))
            mask = np.zeros((H, W), bool)
            for i, name in enumerate(classes):
                mask[:] = False
                mask[1 + i % 40:8 + i % 40, 1 + 2 * k:20] = True
                p.edit_objects(image.id, new=[ObjectState(name, (1 + 2 * k, 1 + i % 40, 20, 8 + i % 40), mask=mask_to_rle(mask))])
            p.set_status(image.id, "reviewed")
    return root / "p"


def ultralytics_names(path: Path) -> dict:
    """How Ultralytics reads a data.yaml (utils.yaml_load): characters YAML cannot hold dropped, then safe_load."""
    text = path.read_text(errors="ignore")
    text = re.sub(r"[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]+", "", text)
    return yaml.safe_load(text)["names"]


def test_every_export_gives_every_allowed_name_back(tmp_path):
    classes = [n if len(n) < 100 else "y" * 100 for n in ALLOWED]  # several long names would only repeat
    classes = list(dict.fromkeys(classes))
    project_dir = labeled_project(tmp_path, classes)
    for fmt in ("coco", "yolo", "yolo-seg", "voc"):
        out = tmp_path / fmt
        assert main(["export", str(project_dir), "--format", fmt, "--out", str(out)]) == 0
        if fmt == "coco":
            from pycocotools.coco import COCO

            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(str(out / "annotations" / "instances_train.json"))
            assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == classes
            assert len(coco.getAnnIds()) == 2 * len(classes)
        elif fmt == "voc":
            names = [node.text for xml in sorted((out / "Annotations").glob("*.xml"))
                     for node in ET.parse(xml).getroot().iter("name")]
            assert names == classes * 2
        else:
            names = yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))["names"]
            assert [names[i] for i in range(len(classes))] == classes
            assert list(ultralytics_names(out / "data.yaml").values()) == classes
        if fmt != "voc":  # our own import reads the export back: the same classes, every object
            back = tmp_path / f"back-{fmt}"
            assert main(["import", str(out), "--out", str(back)]) == 0
            with Project.open(back) as p:
                assert p.classes == classes and p.stats()["objects"] == 2 * len(classes)


def test_a_project_older_than_the_rule_still_exports_files_every_reader_reads(tmp_path):
    """A name stored before the rule (control characters, a line break): data.yaml still reads back exactly,
    VOC's XML stays well-formed (what XML cannot hold becomes U+FFFD), and an image name with a line break is
    one line in VOC's lists."""
    project_dir = labeled_project(tmp_path, ["cat", "dog"])
    with sqlite3.connect(project_dir / "project.sqlite") as db:
        db.execute("UPDATE classes SET name = ? WHERE name = 'cat'", ("a\x01b\ncat",))
        db.execute("UPDATE images SET name = ? WHERE name = 'img0.png'", ("img\n\x02.png",))
    assert main(["export", str(project_dir), "--format", "yolo", "--out", str(tmp_path / "yolo")]) == 0
    names = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text(encoding="utf-8"))["names"]
    assert names == {0: "a\x01b\ncat", 1: "dog"}
    assert main(["export", str(project_dir), "--format", "voc", "--out", str(tmp_path / "voc")]) == 0
    files = sorted((tmp_path / "voc" / "Annotations").glob("*.xml"))
    parsed = [ET.parse(f).getroot() for f in files]
    assert [n.text for root in parsed for n in root.iter("name")] == ["a\ufffdb\ncat", "dog"] * 2
    assert sorted(root.find("filename").text for root in parsed) == ["img1.png", "img__.png"]
    assert sorted((tmp_path / "voc" / "ImageSets" / "Main" / "train.txt").read_text().splitlines()) == ["img1", "img__"]
    assert sorted(p.name for p in (tmp_path / "voc" / "JPEGImages").iterdir()) == ["img1.png", "img__.png"]


# -- the app's class manager and canvas ----------------------------------------------------------------------


@pytest.fixture
def app(tiny_hf, tmp_path):
    from app_harness import tiny_app

    application = tiny_app(tiny_hf[1], tmp_path)
    yield application
    application.sessions.close()


def test_the_app_refuses_in_the_pages_words_and_takes_an_emoji(app, tmp_path):
    from ui import actions as h
    from ui.session import Sessions

    state = Sessions.new_state()
    h.add_uploads(app, state, [str(picture(tmp_path / "photo.png"))])
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    project.add_classes(["cat"])
    (obj,) = project.edit_objects(image_id, new=[ObjectState("cat", (1, 1, 9, 9))])
    with pytest.raises(ProjectError, match=r"the class name 'cat\\ndog' holds a line break"):
        h.rename_class(app, state, "cat", "cat\ndog")
    value, _ = h.canvas_edit(app, state, {"kind": "relabel", "image_id": image_id, "object_ids": [obj.id],
                                          "class_name": "a\x01b"})
    assert "control character" in str(value)
    assert project.classes == ["cat"] and project.objects(image_id)[0].class_name == "cat"
    assert h.rename_class(app, state, "cat", "🐱") == "renamed 'cat' to '🐱' (1 object(s))"
    assert project.classes == ["🐱"] and project.objects(image_id)[0].class_name == "🐱"
