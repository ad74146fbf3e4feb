"""The `gdino` command line, run in-process through main() with the tiny random models."""

import contextlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_sam import save_tiny_sam

from gdino.cli import main
from gdino.labeling.inputs import NoImagesError, find_images
from gdino.labeling.prefetch import Prefetcher
from gdino.processing import ImageError
from gdino.store import Project

CLASSES = "cat, remote control"


def write_image(path: Path, seed: int, size=(48, 48)) -> Path:  # square: the model sees 800x800
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)  # format from the suffix, any case
    return path


def mixed_folder(root: Path) -> Path:
    """4 good images (one in a subfolder, one .PNG), a 0-byte and a garbage .jpg, and files to ignore."""
    for k, name in enumerate(["a.png", "b.jpg", "sub/c.png", "D.PNG"]):
        write_image(root / name, k)
    (root / "empty.jpg").write_bytes(b"")
    (root / "garbage.jpg").write_bytes(b"this is not a jpeg" * 4)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"a hidden file, not ours")
    return root


def label_args(model_dir, *more) -> list[str]:
    return ["label", *map(str, more), "--model", str(model_dir), "--device", "cpu", "--box-threshold", "0.2"]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def labeled(tiny_hf, tmp_path_factory):
    """One labeling run of a mixed folder, exported to COCO on the way; the output kept for the tests."""
    tmp = tmp_path_factory.mktemp("cli")
    images, proj, coco = mixed_folder(tmp / "images"), tmp / "proj", tmp / "coco"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(label_args(tiny_hf[1], images, "--classes", CLASSES, "--out", proj,
                               "--export", "coco", "--export-dir", coco))
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "images": images, "proj": proj, "coco": coco,
            "model": tiny_hf[1]}


# -- help and the module entry --------------------------------------------------------------------------


@pytest.mark.parametrize("command, flags", [
    ([], ["label", "export", "info"]),
    (["label"], ["--classes", "--prompt", "--out", "--sam", "--model", "--batch-size", "--box-threshold", "--nms-iou",
                 "--cross-class-nms-iou", "--no-copy",
                 "--export-dir", "--val-fraction", "example"]),
    (["export"], ["--format", "--out", "--reviewed-only", "--val-fraction", "--seed", "--zip", "yolo-seg", "example"]),
    (["info"], ["--json", "example"]),
])
def test_help(capsys, command, flags):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    for flag in flags:
        assert flag in out


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "gdino.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "gdino label" in result.stdout


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "COMMAND" in err


def test_every_command_is_a_module_with_a_parser_and_run():
    """One pattern for all commands (train included): a module per command, its add_parser sets its run."""
    import argparse

    import gdino.cli as cli

    names = {"label", "import", "import-results", "export", "rm", "info", "models", "train"}
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == names and len(cli.COMMANDS) == len(names)
    runs = {parser.get_default("run") for parser in commands.choices.values()}
    assert runs == {module.run for module in cli.COMMANDS}


# -- label ----------------------------------------------------------------------------------------------


def test_label_a_folder_labels_the_good_images_and_lists_the_bad(labeled):
    assert labeled["code"] == 1  # some images failed
    with Project.open(labeled["proj"]) as project:
        records = project.images()
        assert sorted(r.name for r in records) == ["D.PNG", "a.png", "b.jpg", "c.png"]
        assert all(r.status == "auto" for r in records)
        assert project.stats()["objects"] > 0 and {"cat", "remote control"} <= set(project.classes)
        assert all(r.path.parent == labeled["proj"] / "images" for r in records)  # copied in by default
    out = labeled["out"]
    assert "labeled 4 image(s)" in out and "failed 2 image(s)" in out and "images/s" in out
    assert "empty.jpg" in out and "empty file" in out
    assert "garbage.jpg" in out and "could not read" in out
    assert "notes.txt" not in out + labeled["err"] and ".hidden" not in out + labeled["err"]
    assert "skipping" in labeled["err"] and "garbage.jpg" in labeled["err"]  # reported as it happens too


def test_a_rerun_adds_and_labels_nothing_and_retries_the_failures(labeled, capsys):
    args = label_args(labeled["model"], labeled["images"], "--classes", CLASSES, "--out", labeled["proj"])
    code, out, _ = run(capsys, *args)
    assert code == 1  # the bad files are tried again, and fail again
    assert "labeled 0 image(s)" in out and "added 0 new" in out and "skipped 4 already labeled" in out
    assert "empty.jpg" in out and "garbage.jpg" in out
    with Project.open(labeled["proj"]) as project:
        assert project.stats()["images"] == 4

    good = [labeled["images"] / "a.png", labeled["images"] / "b.jpg", labeled["images"] / "**" / "*.PNG",
            labeled["images"] / "sub"]
    code, out, _ = run(capsys, *label_args(labeled["model"], *good, "--classes", CLASSES, "--out", labeled["proj"]))
    assert code == 0 and "nothing to do" in out and "4 image(s) already labeled" in out


def test_a_removed_image_stays_removed_until_asked_back(tiny_hf, tmp_path, capsys):
    """`gdino rm` then `gdino label` of the same folder: the removed file is not added back silently; the run
    says so and how to add it again (--add-removed), which then adds it once."""
    folder = tmp_path / "photos"
    for k in range(3):
        write_image(folder / f"p{k}.png", k)
    proj = tmp_path / "proj"
    label = label_args(tiny_hf[1], folder, "--classes", CLASSES, "--out", proj)
    assert run(capsys, *label)[0] == 0
    assert run(capsys, "rm", proj, "p1.png")[0] == 0
    code, out, _ = run(capsys, *label)
    assert code == 0 and "nothing to do" in out, out
    assert "left out 1 file(s) removed from the project earlier" in out and "--add-removed" in out, out
    with Project.open(proj) as project:
        assert sorted(r.name for r in project.images()) == ["p0.png", "p2.png"]
    code, out, _ = run(capsys, *label, "--add-removed")
    assert code == 0 and "added 1 new image(s)" in out, out
    code, out, _ = run(capsys, *label)  # back in the project: nothing left out any more
    assert code == 0 and "removed from the project earlier" not in out, out
    with Project.open(proj) as project:
        assert sorted((r.name, r.status) for r in project.images()) == [("p0.png", "auto"), ("p1.png", "auto"),
                                                                          ("p2.png", "auto")]


def test_ctrl_c_keeps_what_is_done_and_a_rerun_resumes(tiny_hf, tmp_path, capsys, monkeypatch):
    from gdino.detector import Detector

    for k in range(2):
        write_image(tmp_path / "in" / f"im{k}.png", k)
    real, calls = Detector.detect_batch, []

    def interrupted_on_the_second_image(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect_batch", interrupted_on_the_second_image)
    args = label_args(tiny_hf[1], tmp_path / "in", "--classes", "cat", "--out", tmp_path / "proj")
    code, _, err = run(capsys, *args)
    assert code == 130 and "interrupted" in err and "again to resume" in err and "Traceback" not in err
    with Project.open(tmp_path / "proj") as project:
        assert [r.status for r in project.images()] == ["auto", "unlabeled"]

    monkeypatch.setattr(Detector, "detect_batch", real)
    # without IMAGES: the project's own unlabeled images
    code, out, _ = run(capsys, *label_args(tiny_hf[1], "--classes", "cat", "--out", tmp_path / "proj"))
    assert code == 0 and "labeled 1 image(s)" in out and "skipped 1 already labeled" in out
    with Project.open(tmp_path / "proj") as project:
        assert [r.status for r in project.images()] == ["auto", "auto"]


def test_glob_no_copy_and_sam_masks(tiny_hf, tmp_path, capsys):
    files = [write_image(tmp_path / "in" / "x" / "one.png", 1), write_image(tmp_path / "in" / "x" / "y" / "two.png", 2)]
    write_image(tmp_path / "in" / "three.jpg", 3)  # not matched by the pattern
    sam = save_tiny_sam(tmp_path / "sam.pth")
    pattern = str(tmp_path / "in" / "**" / "*.png")  # as a quoted pattern reaches the program
    args = label_args(tiny_hf[1], pattern, "--classes", "cat", "--out", tmp_path / "proj", "--sam", sam,
                      "--no-copy", "--batch-size", "2")
    code, out, err = run(capsys, *args)
    assert code == 0, out + err
    with Project.open(tmp_path / "proj") as project:
        records = project.images()
        assert sorted(r.path for r in records) == sorted(files)  # referenced where they are
        objects = [o for r in records for o in project.objects(r.id)]
        assert objects and all(o.mask is not None and o.mask["size"] == [48, 48] for o in objects)
        masked = [r for r in records if project.objects(r.id)]
    # the run kept its embeddings in the project: a click in review (another process, another Segmenter) on an
    # image it segmented runs no image encoder
    from gdino.sam.segmenter import Segmenter
    from gdino.sam.store import project_store

    assert len(list((tmp_path / "proj" / ".cache" / "sam").glob("*.safetensors"))) == len(masked)
    review = Segmenter.from_pretrained(sam, device="cpu").using(project_store(tmp_path / "proj"))
    review.refine(masked[0].path, points=[(20, 20)], labels=[1])
    assert (review.encoder_calls, review.store_hits) == (0, 1)
    code, out, _ = run(capsys, *args)
    assert code == 0 and "nothing to do" in out


# -- export and info ------------------------------------------------------------------------------------


def load_coco(path: Path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(path))


def test_label_export_writes_coco_that_pycocotools_loads(labeled):
    coco = load_coco(labeled["coco"] / "annotations" / "instances_train.json")
    with Project.open(labeled["proj"]) as project:
        assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == project.stats()["objects"]
    assert sorted(p.name for p in (labeled["coco"] / "images" / "train").iterdir()) == ["D.PNG", "a.png", "b.jpg", "c.png"]
    assert "exported 4 image(s)" in labeled["out"]


def test_export_command(labeled, tmp_path, capsys):
    code, out, _ = run(capsys, "export", labeled["proj"], "--format", "coco", "--out", tmp_path / "coco", "--val-fraction",
                       "0.5", "--seed", "1")
    assert code == 0 and "train 2, val 2" in out
    images = [len(load_coco(tmp_path / "coco" / "annotations" / f"instances_{s}.json").getImgIds()) for s in ("train", "val")]
    assert images == [2, 2]

    code, out, _ = run(capsys, "export", labeled["proj"], "--format", "yolo", "--out", tmp_path / "y", "--zip")
    assert code == 0 and (tmp_path / "y.zip").is_file()
    with zipfile.ZipFile(tmp_path / "y.zip") as zf:
        assert "data.yaml" in zf.namelist() and "labels/train/a.txt" in zf.namelist()

    code, _, err = run(capsys, "export", labeled["proj"], "--format", "voc", "--out", tmp_path / "voc", "--reviewed-only")
    assert code == 1 and "no reviewed images" in err and not (tmp_path / "voc").exists()


def test_info_table_and_json(labeled, capsys):
    code, out, _ = run(capsys, "info", labeled["proj"])
    with Project.open(labeled["proj"]) as project:
        stats = project.stats()
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    assert ["images", "4"] in lines and ["auto", "4"] in lines and ["unlabeled", "0"] in lines
    assert ["objects", str(stats["objects"])] in lines
    assert ["remote", "control", str(stats["classes"]["remote control"])] in lines

    code, out, _ = run(capsys, "info", labeled["proj"], "--json")
    assert code == 0 and json.loads(out) == {"project": str(labeled["proj"]), **stats}


# -- usage errors ---------------------------------------------------------------------------------------


def test_missing_classes_is_a_usage_error(tiny_hf, tmp_path, capsys):
    write_image(tmp_path / "a.png", 0)
    code, _, err = run(capsys, "label", tmp_path / "a.png", "--out", tmp_path / "proj")
    assert code == 2 and "--classes" in err and "--prompt" in err


def test_a_missing_model_is_one_clear_line(tmp_path, capsys):
    write_image(tmp_path / "a.png", 0)
    code, _, err = run(capsys, *label_args(tmp_path / "no-such-model", tmp_path / "a.png", "--classes", "cat",
                                           "--out", tmp_path / "proj"))
    assert code == 2 and "no-such-model" in err and "Traceback" not in err
    assert not (tmp_path / "proj").exists()  # nothing written before the model loads


def test_no_images_matched(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    for pattern in [tmp_path / "empty" / "*.png", tmp_path / "empty", tmp_path / "missing.jpg"]:
        code, _, err = run(capsys, "label", pattern, "--classes", "cat", "--out", tmp_path / "proj")
        assert code == 2 and "matches no image" in err and str(pattern) in err


@pytest.mark.parametrize("flags, message", [
    (["--export", "coco"], "--export-dir"),
    (["--dtype", "float16", "--device", "cpu"], "CUDA only; on a CPU, --precision fast is the fast mode"),
    (["--precision", "fast", "--dtype", "bfloat16"], "--precision fast chooses the number format itself"),
    (["--precision", "quick"], "argument --precision: invalid choice: 'quick'"),
    (["--box-threshold", "1.5"], "between 0 and 1"),
    (["--nms-iou", "lots"], "neither an IoU between 0 and 1 nor 'off'"),
    (["--cross-class-nms-iou", "2"], "between 0 and 1"),
    (["--classes", "cat,,dog"], "empty class name"),
    (["--sam", "/no/such/sam.pth"], "SAM checkpoint not found"),
])
def test_bad_flags(tiny_hf, tmp_path, capsys, flags, message):
    write_image(tmp_path / "a.png", 0)
    base = ["label", tmp_path / "a.png", "--out", tmp_path / "proj", "--model", tiny_hf[1]]
    code, _, err = run(capsys, *base, *(["--classes", "cat"] if "--classes" not in flags else []), *flags)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("flags, said", [
    ([], "fast"),  # the default on a CPU (its check on a trained model holds: bench/bench_fast_quality.py)
    (["--precision", "fast"], "fast"),
    (["--precision", "exact"], "exact (float32)"),
    (["--dtype", "float32"], "exact (float32)"),  # a number format asked for: exact
])
def test_precision_on_a_cpu_labels_and_says_which(tiny_hf, tmp_path, capsys, flags, said):
    """fast on a CPU: the heavy layers in bfloat16 (with bfloat16 units) or int8, said at the start; the run
    labels as usual."""
    from gdino import Project
    from gdino.modeling.precision import native_bfloat16

    write_image(tmp_path / "a.png", 0)
    code, _, err = run(capsys, *label_args(tiny_hf[1], tmp_path / "a.png", "--classes", "cat", "--out",
                                           tmp_path / "proj", "--box-threshold", "0", "--device", "cpu", *flags))
    assert code == 0, err
    if said == "fast":
        said = f"fast ({'bfloat16 products' if native_bfloat16() else 'int8 weights'} in "
    assert f"precision: {said}" in err
    project = Project.open(tmp_path / "proj")
    try:
        [image] = project.images()
        assert image.status == "auto" and project.objects(image.id)
    finally:
        project.close()


def test_bfloat16_on_a_cpu_without_bfloat16_units_is_said_to_be_slow(tiny_hf, tmp_path, capsys, monkeypatch):
    import gdino.cli.label as label_cli

    write_image(tmp_path / "a.png", 0)
    for has_units in (False, True):
        monkeypatch.setattr(label_cli, "native_bfloat16", lambda has_units=has_units: has_units)
        code, _, err = run(capsys, *label_args(tiny_hf[1], tmp_path / "a.png", "--classes", "cat", "--out",
                                               tmp_path / f"proj{has_units}", "--dtype", "bfloat16", "--device", "cpu"))
        assert code == 0, err
        slow = "this CPU has no bfloat16 units: --dtype bfloat16 runs several times slower than float32 here"
        assert (slow in err) is not has_units
        assert "precision: exact (bfloat16)" in err


def test_nms_flags_reach_the_stored_settings(tiny_hf, tmp_path, capsys):
    from gdino import Project
    from gdino.labeling import LabelSettings

    write_image(tmp_path / "a.png", 0)
    code, _, err = run(capsys, *label_args(tiny_hf[1], tmp_path / "a.png", "--classes", "cat,dog", "--out",
                                           tmp_path / "proj", "--nms-iou", "off", "--cross-class-nms-iou", "0.6"))
    assert code == 0, err
    assert "deformable attention: " in err  # which kernel runs, said once at the start
    project = Project.open(tmp_path / "proj")
    try:
        settings = LabelSettings.from_run(project.last_run(project.images()[0].id))
    finally:
        project.close()
    assert settings.nms_iou is None and settings.agnostic_nms_iou == 0.6


def test_a_mistyped_malloc_setting_is_a_usage_error(tmp_path, capsys, monkeypatch):
    from gdino import memory

    monkeypatch.setenv("GDINO_MALLOC", "off")
    memory.keep_freed_memory.cache_clear()
    try:
        code, _, err = run(capsys, "info", tmp_path)
    finally:
        memory.keep_freed_memory.cache_clear()
    assert code == 2 and "GDINO_MALLOC must be 'keep'" in err and "Traceback" not in err


def test_not_a_project(tmp_path, capsys):
    for command in (["info", tmp_path], ["export", tmp_path, "--format", "coco", "--out", tmp_path / "x"]):
        code, _, err = run(capsys, *command)
        assert code == 2 and "not a gdino project" in err


# -- finding and decoding images ------------------------------------------------------------------------


def test_find_images_order_dedup_and_filters(tmp_path):
    a, b = write_image(tmp_path / "b" / "a.JPG", 0), write_image(tmp_path / "b" / "z.png", 1)
    (tmp_path / "b" / ".x.png").write_bytes(b"hidden")
    write_image(tmp_path / "b" / ".thumbs" / "t.png", 2)
    (tmp_path / "b" / "n.txt").write_text("no")
    named = tmp_path / "odd.dat"
    named.write_bytes(b"named explicitly: taken, fails later")
    assert find_images([str(b), str(tmp_path / "b"), str(named)]) == [b, a, named]
    with pytest.raises(NoImagesError, match="matches no image"):  # the project folder itself is never an input
        find_images([str(tmp_path / "b")], exclude=tmp_path / "b")


def test_prefetcher_returns_images_in_order_and_raises_their_errors(tmp_path):
    good = write_image(tmp_path / "a.png", 0)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with Prefetcher([(1, good), (2, tmp_path / "bad.png"), (3, good)], depth=1) as prefetch:
        assert prefetch(1).size == (48, 48)
        with pytest.raises(ImageError, match="could not read"):
            prefetch(2)
        assert prefetch(3).mode == "RGB"
        with pytest.raises(LookupError):
            prefetch(4)


def test_export_and_info_of_a_project_with_unmapped_phrases(tmp_path, capsys):
    with Project.create(tmp_path / "proj", ["cat"]) as project:  # as the app leaves it after a free-text prompt
        image = project.add_image(write_image(tmp_path / "a.png", 1))
        project.replace_model_objects(image.id, [{"box": (1, 1, 20, 20), "class_name": "cat", "score": 0.9},
                                                 {"box": (2, 2, 30, 30), "class_name": "a red couch", "score": 0.5}],
                                      phrases=["cat", "a red couch"])
    code, out, err = run(capsys, "export", tmp_path / "proj", "--format", "coco", "--out", tmp_path / "coco")
    assert code == 0 and "1 object(s) as coco" in out
    assert "left out 1 object(s) labeled with free-text phrases not mapped to a class: 'a red couch' (1)" in err
    assert [c["name"] for c in json.loads((tmp_path / "coco/annotations/instances_train.json").read_text())["categories"]] \
        == ["cat"]
    code, out, _ = run(capsys, "info", tmp_path / "proj")
    lines = [line.split() for line in out.splitlines()]
    assert ["cat", "1"] in lines and ["phrase", "objects"] in lines and ["a", "red", "couch", "1"] in lines


def test_models_lists_the_recommended_checkpoints_with_their_published_numbers(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    expected = {  # the authors' published zero-shot AP (README table)
        "IDEA-Research/grounding-dino-tiny": ("48.4", "28.8"),
        "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det": ("50.6", "40.5"),
        "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_grit_v3det": ("50.4", "41.4"),
        "openmmlab-community/mm_grounding_dino_base_o365v1_goldg_v3det": ("52.5", "-"),
        "openmmlab-community/mm_grounding_dino_large_o365v2_oiv6_goldg": ("53.0", "-"),
        "iSEE-Laboratory/llmdet_tiny": ("-", "44.7"),
        "iSEE-Laboratory/llmdet_base": ("-", "48.3"),
        "iSEE-Laboratory/llmdet_large": ("-", "51.1"),
        "facebook/sam3": ("56.5", "53.6"),  # box detection AP in the official README (sam3 0.1.4's package metadata)
    }
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == set(expected)
    for repo, (coco, lvis) in expected.items():
        assert lines[repo][1:5] == ["COCO", coco, "LVIS", lvis]
    assert "default: IDEA-Research/grounding-dino-tiny" in out
    assert "gated: accept Meta's SAM License" in " ".join(lines["facebook/sam3"])


@pytest.mark.parametrize("args, message", [
    (["label", "x.png", "--classes", "cat", "--batch-size", "two"], "--batch-size: must be a whole number, got 'two'"),
    (["label", "x.png", "--classes", "cat", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["label", "x.png", "--classes", "cat", "--box-threshold", "nan"], "--box-threshold: must be a finite number"),
    (["label", "x.png", "--classes", "cat", "--text-threshold", "high"], "--text-threshold: must be a number, got 'high'"),
    (["label", "x.png", "--classes", "cat", "--engine", "ray", "--cpus-per-actor", "inf"],
     "--cpus-per-actor: must be a finite number"),
    (["label", "x.png", "--classes", "cat", "--engine", "ray", "--gpus-per-actor", "-1"],
     "--gpus-per-actor: must be a number >= 0, got -1"),
    (["export", "p", "--format", "coco", "--out", "o", "--val-fraction", "1"],
     "--val-fraction: must be at least 0 and below 1, got 1"),
    (["import", "d", "--out", "p", "--max-images", "many"], "--max-images: must be a whole number, got 'many'"),
    (["train", "p", "--out", "o", "--epochs", "1.5"], "--epochs: must be a whole number, got '1.5'"),
])
def test_number_flags_say_what_they_need_in_every_command(capsys, args, message):
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err and "invalid" not in err, err


def test_export_says_what_it_left_out_or_bent(tmp_path, capsys):
    """Issue 25 items 7 and 11 in the CLI's words: skipped images are counted, and yolo-seg names the masks one
    polygon gives back only approximately (the IoU read back from the written file), offering coco."""
    from gdino.formats.validate import ImportLimits
    from gdino.formats.yolo import parse_yolo_labels
    from gdino.masks import mask_to_rle, rle_to_mask

    noisy = np.zeros((240, 320), dtype=bool)
    noisy[10:130, 10:170] = np.random.default_rng(0).random((120, 160)) < 0.3  # hundreds of parts
    with Project.create(tmp_path / "proj", ["cat"]) as project:
        kept = project.add_image(write_image(tmp_path / "a.png", 1, size=(240, 320)))
        skipped = project.add_image(write_image(tmp_path / "b.png", 2, size=(240, 320)))
        project.replace_model_objects(kept.id, [{"box": (10, 10, 170, 130), "class_name": "cat", "score": 0.9,
                                                 "mask": mask_to_rle(noisy)}])
        project.set_status(skipped.id, "skipped")
        (obj,) = project.objects(kept.id)
    code, out, err = run(capsys, "export", tmp_path / "proj", "--format", "yolo-seg", "--out", tmp_path / "yolo")
    assert code == 0 and "exported 1 image(s)" in out
    assert "left out 1 image(s) marked skipped" in err, err
    [back] = parse_yolo_labels((tmp_path / "yolo/labels/train/a.txt").read_text(), "a.txt", 320, 240, 1, ImportLimits())
    got = rle_to_mask(back["mask"])
    iou = (got & noisy).sum() / (got | noisy).sum()
    assert iou < 0.9 and "1 mask(s) too detailed for one polygon" in err
    assert f"a.png object {obj.id} (IoU {iou:.2f})" in err and "export coco for exact masks" in err, err
