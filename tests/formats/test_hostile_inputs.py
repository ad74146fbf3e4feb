"""A hostile-input corpus for the dataset importer: every archive, folder and file is generated here, each
with its verdict: refused with a message that names the problem, or accepted with exact counts.

For every case: a refusal leaves the project exactly as it was (no images, objects, classes or files) and
its message names no server path; nothing outside the project and the importer's temporary folder is
written (an audit hook watches every open/mkdir/rename/remove, and the rest of the test's folder is
compared before and after); nothing in the "outside" folder (which holds secret.png) is ever opened or
listed, and its bytes never reach the project. One test runs the formerly process-killing inputs in a
child process, which must exit normally.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import unicodedata
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gdino.formats.importing import import_coco, import_folder, import_path, import_yolo, import_zip
from gdino.formats.validate import DatasetError, ImportLimits
from gdino.safezip import UnsafeZipError
from gdino.store import Project

W, H = 64, 48
SYMLINKS = sys.platform != "win32"

# -- building blocks ------------------------------------------------------------------------------------


@cache
def png(seed: int = 0, width: int = W, height: int = H) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@cache
def flat_png(width: int, height: int) -> bytes:
    """A large image that compresses to almost nothing (one colour)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A real small PNG whose IHDR claims another size (CRC fixed, so only the size is a lie)."""
    data = bytearray(png(3))
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def coco(n_images: int = 1, anns=(), cats=None, size=(W, H)) -> dict:
    """A COCO dict: images img1.png .. imgN.png (ids 1..N) of `size`, category 1 "cat" unless given."""
    images = [{"id": k, "file_name": f"img{k}.png", "width": size[0], "height": size[1]} for k in range(1, n_images + 1)]
    return {"images": images, "annotations": list(anns),
            "categories": [{"id": 1, "name": "cat"}] if cats is None else cats}


def ann(bbox=(4, 4, 20, 10), image_id=1, category_id=1, **extra) -> dict:
    return {"id": 1, "image_id": image_id, "category_id": category_id,
            "bbox": list(bbox) if isinstance(bbox, tuple) else bbox, **extra}


def seg(segmentation) -> dict:
    return ann(segmentation=segmentation)


def patch_headers(data: bytes, name: str, field: str, value: int) -> bytes:
    """Overwrite `field` ("size": uncompressed size, "flags") of entry `name` in both its local and central
    headers, as a hostile zip would (zipfile writes them consistently)."""
    fmt, local_at, central_at = {"size": ("<I", 22, 24), "flags": ("<H", 6, 8)}[field]
    out = bytearray(data)
    encoded = name.encode()
    local = out.find(b"PK\x03\x04")
    while out[local + 30:local + 30 + len(encoded)] != encoded:
        local = out.find(b"PK\x03\x04", local + 4)
    struct.pack_into(fmt, out, local + local_at, value)
    central = out.find(b"PK\x01\x02")
    while out[central + 46:central + 46 + len(encoded)] != encoded:
        central = out.find(b"PK\x01\x02", central + 4)
    struct.pack_into(fmt, out, central + central_at, value)
    return bytes(out)


def zip_bytes(entries, compression=zipfile.ZIP_STORED) -> bytes:
    """entries: (name or ZipInfo, bytes); names are written verbatim (ZipInfo keeps hostile ones)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": intended here
        for name, data in entries:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, data)
    return buf.getvalue()


class World:
    """The test's folder: data/ (a dataset folder), uploads/ (zips, loose files), outside/ (must stay
    untouched and unread: it holds secret.png, a real image), and the project."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.data = tmp / "data"
        self.uploads = tmp / "uploads"
        self.outside = tmp / "outside"
        self.secret = self.outside / "secret.png"
        for folder in (self.data, self.uploads, self.outside):
            folder.mkdir()
        self.secret.write_bytes(png(666))
        (self.outside / "secret.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        (self.outside / "data.yaml").write_text("names: [stolen]\n")

    def write(self, files: dict, root: Path | None = None) -> Path:
        root = root or self.data
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, (dict, list)):
                content = json.dumps(content)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        return root

    def folder(self, files: dict, limits: ImportLimits | None = None):
        self.write(files)
        return lambda project: import_folder(project, self.data, limits)

    def zip(self, entries, limits: ImportLimits | None = None, compression=zipfile.ZIP_STORED, raw: bytes | None = None):
        path = self.uploads / "dataset.zip"
        path.write_bytes(raw if raw is not None else zip_bytes(entries, compression))
        return lambda project: import_zip(project, path, limits)

    def coco_folder(self, doc, n_images: int | None = None, extra: dict | None = None, limits=None):
        """annotations.json + images/img1.png ... (as many as the doc lists, unless n_images says)."""
        count = len(doc["images"]) if n_images is None else n_images
        files = {f"images/img{k}.png": png(k) for k in range(1, count + 1)}
        files["annotations.json"] = doc
        return self.folder({**files, **(extra or {})}, limits)

    def yolo(self, label, names=("cat", "dog"), yaml_text: str | bytes | None = None, limits=None, image=None):
        """data.yaml + images/a.png + labels/a.txt, imported as a zip (as uploads are)."""
        if yaml_text is None:
            yaml_text = "names:\n" + "".join(f"  - {n}\n" for n in names)
        entries = [("data.yaml", yaml_text.encode() if isinstance(yaml_text, str) else yaml_text),
                   ("images/a.png", image or png(1))]
        if label is not None:
            entries.append(("labels/a.txt", label.encode() if isinstance(label, str) else label))
        return self.zip(entries, limits)


@dataclass(frozen=True)
class Refused:
    pattern: str  # re.search'ed in the message (DOTALL)


@dataclass(frozen=True)
class Accepted:
    images: int
    objects: int
    note: str | None = None  # re.search'ed in the report's notes, joined


@dataclass(frozen=True)
class Case:
    id: str
    build: object  # World -> (Project -> ImportReport)
    verdict: Refused | Accepted

    def __repr__(self):
        return self.id


CASES: list[Case] = []


def case(id_: str, verdict):
    def register(build):
        CASES.append(Case(id_, build, verdict))
        return build
    return register


def zero_bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.png", "w") as f:
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    return buf.getvalue()


def symlink_info(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def nul_name_zip() -> bytes:
    """An entry whose name holds a NUL: 'evil.png\\0/../../x.png' (zipfile itself cannot write one)."""
    data = zip_bytes([("ok.png", png(1)), ("evil.png_/../../x.png", png(2))])
    return data.replace(b"evil.png_/../../x.png", b"evil.png\0/../../x.png")


# -- zip archives: paths ----------------------------------------------------------------------------------

for _id, _name in [("dotdot", "../x.png"), ("dotdot-backslash", "..\\x.png"), ("dotdot-nested", "a/../../x.png"),
                   ("dotdot-nested-backslash", "a\\..\\..\\x.png"), ("dotdot-mixed", "a/..\\../x.png"),
                   ("dotdot-deep", "a/b/c/../../../../outside/x.png")]:
    case(f"zip-traversal-{_id}", Refused(re.escape(repr(_name)) + ".*climbs out"))(
        lambda w, n=_name: w.zip([("ok.png", png(1)), (n, png(2))]))

for _id, _name in [("posix", "/abs.png"), ("drive-backslash", "C:\\x.png"), ("drive-slash", "C:/x.png"),
                   ("drive-relative", "C:x.png"), ("unc", "\\\\server\\share\\x.png"), ("double-slash", "//etc/x.png")]:
    case(f"zip-absolute-{_id}", Refused(re.escape(repr(_name)) + ".*absolute path"))(
        lambda w, n=_name: w.zip([("ok.png", png(1)), (n, png(2))]))

case("zip-dotdot-that-stays-inside", Accepted(1, 0))(lambda w: w.zip([("a/../x.png", png(1))]))
case("zip-dot-segments", Accepted(1, 0))(lambda w: w.zip([("./a/./b/x.png", png(1))]))
case("zip-nul-in-name", Refused(r"NUL"))(lambda w: w.zip(None, raw=nul_name_zip()))
case("zip-symlink-entry-to-secret", Refused(r"'innocent\.png' is a symbolic link"))(
    lambda w: w.zip([("ok.png", png(1)), symlink_info("innocent.png", str(w.secret))]))
case("zip-symlink-folder-then-file", Refused(r"'d' is a symbolic link"))(
    lambda w: w.zip([symlink_info("d", str(w.outside)), ("d/x.png", png(1))]))


@case("zip-fifo-entry", Refused(r"'pipe\.png' is not a regular file"))
def _(w):
    fifo = zipfile.ZipInfo("pipe.png")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    return w.zip([(fifo, b"")])


case("zip-duplicate-name", Refused(r"holds 'a\.png' twice"))(lambda w: w.zip([("a.png", png(1)), ("a.png", png(2))]))
case("zip-duplicate-name-case", Refused(r"holds 'a\.png' twice"))(lambda w: w.zip([("A.png", png(1)), ("a.png", png(2))]))
case("zip-duplicate-after-normalizing", Refused(r"holds 'x/\./a\.png' twice"))(
    lambda w: w.zip([("x/a.png", png(1)), ("x/./a.png", png(2))]))
case("zip-duplicate-nfc-nfd", Refused(r"twice"))(lambda w: w.zip([(unicodedata.normalize("NFC", "café.png"), png(1)),
                                                                  (unicodedata.normalize("NFD", "café.png"), png(2))]))
case("zip-same-bytes-two-names", Accepted(2, 0))(lambda w: w.zip([("a.png", png(1)), ("b/a.png", png(1))]))
case("zip-directory-entry-climbing-out", Accepted(1, 0))(lambda w: w.zip([("../evil/", b""), ("a.png", png(1))]))
case("zip-macos-junk-skipped", Accepted(1, 0))(
    lambda w: w.zip([("a.png", png(1)), ("__MACOSX/._a.png", b"junk"), (".DS_Store", b"junk")]))
case("zip-hidden-folder-skipped", Accepted(1, 0))(lambda w: w.zip([("a.png", png(1)), (".git/b.png", png(2))]))
case("zip-nested-zip-not-opened", Accepted(1, 0, note=r"inner\.zip: not an image"))(
    lambda w: w.zip([("a.png", png(1)), ("inner.zip", zip_bytes([("../../x.png", png(2))]))]))
case("zip-empty", Accepted(0, 0))(lambda w: w.zip([]))

# -- zip archives: bombs, lies, corruption ----------------------------------------------------------------

case("zip-encrypted-flag", Refused(r"'a\.png' is encrypted"))(
    lambda w: w.zip(None, raw=patch_headers(zip_bytes([("a.png", png(1))]), "a.png", "flags", 0x1)))
case("zip-bomb-by-ratio", Refused(r"'zeros\.png' expands \d+ times.*zip bomb"))(lambda w: w.zip(None, raw=zero_bomb(8 << 20)))
case("zip-bomb-by-declared-size", Refused(r"expands to more than \d+ bytes.*'a\.png'"))(
    lambda w: w.zip(None, raw=patch_headers(zip_bytes([("a.png", png(1))]), "a.png", "size", 3_000_000_000)))
case("zip-bomb-by-count", Refused(r"1010 files, more than the limit of 1005"))(
    lambda w: w.zip([(f"f{k}.txt", b"") for k in range(1010)], limits=ImportLimits(max_images=5)))
case("zip-more-images-than-the-limit", Refused(r"8 images, more than the limit of 5"))(
    lambda w: w.zip([(f"i{k}.png", png(k)) for k in range(8)], limits=ImportLimits(max_images=5)))
case("zip-declared-size-too-small", Refused(r"'big\.png'.*(more bytes than its header|Bad CRC|corrupt)"))(
    lambda w: w.zip(None, raw=patch_headers(zip_bytes([("ok.png", png(1)), ("big.png", png(2))]), "big.png", "size", 10)))
case("zip-declared-size-too-large-but-small", Accepted(1, 0))(
    lambda w: w.zip(None, raw=patch_headers(zip_bytes([("a.png", png(1))]), "a.png", "size", len(png(1)) + 5000)))
case("zip-not-a-zip", Refused(r"not a readable zip file"))(lambda w: w.zip(None, raw=b"<html>not a zip</html>" * 10))
case("zip-zero-bytes", Refused(r"not a readable zip file"))(lambda w: w.zip(None, raw=b""))
case("zip-truncated", Refused(r"not a readable zip file"))(
    lambda w: w.zip(None, raw=zip_bytes([("a.png", png(1)), ("b.png", png(2))])[:9000]))


@case("zip-crc-mismatch", Refused(r"zip entry 'b\.png'.*CRC"))
def _(w):
    data = bytearray(zip_bytes([("a.png", png(1)), ("b.png", png(2))]))
    data[data.index(png(2)) + 3000] ^= 0xFF
    return w.zip(None, raw=bytes(data))


# -- zip archives: names ----------------------------------------------------------------------------------

case("zip-unicode-cjk", Accepted(1, 0))(lambda w: w.zip([("猫.png", png(1))]))
case("zip-unicode-nfd", Accepted(1, 0))(lambda w: w.zip([(unicodedata.normalize("NFD", "café.png"), png(1))]))
case("zip-newline-in-name", Accepted(2, 0))(lambda w: w.zip([("a\nb.png", png(1)), ("c\r\n.png", png(2))]))
case("zip-over-long-name", Refused(r"too long"))(lambda w: w.zip([("a.png", png(1)), ("x" * 300 + ".png", png(2))]))
case("zip-over-long-multibyte-name", Refused(r"too long"))(lambda w: w.zip([("猫" * 90 + ".png", png(2))]))
case("zip-long-path-short-parts", Accepted(1, 0))(lambda w: w.zip([("/".join(["d" * 200] * 3) + "/a.png", png(1))]))
case("zip-long-names-colliding", Accepted(2, 0))(
    lambda w: w.zip([("a/" + "y" * 250 + ".png", png(1)), ("b/" + "y" * 250 + ".png", png(2))]))

# -- plain images -----------------------------------------------------------------------------------------

case("image-truncated-png", Refused(r"'images/cut\.png'"))(lambda w: w.zip([("images/cut.png", png(1)[:3000])]))
case("image-zero-byte-jpg", Refused(r"'empty\.jpg' is an empty file"))(lambda w: w.zip([("empty.jpg", b"")]))
case("image-text-named-jpg", Refused(r"'notes\.jpg'"))(lambda w: w.zip([("notes.jpg", b"just some text\n" * 20)]))
case("image-1x1", Refused(r"'dot\.png' is only 1x1 pixels"))(lambda w: w.zip([("dot.png", png(1, 1, 1))]))
case("image-header-claims-100000x100000", Refused(r"'bomb\.png'.*(too large|limit)"))(
    lambda w: w.zip([("bomb.png", png_claiming(100_000, 100_000))]))
case("image-header-claims-8000x7000", Refused(r"'big\.png' is 8000x7000.*more than the limit"))(
    lambda w: w.folder({"big.png": png_claiming(8000, 7000)}))
case("image-one-bad-among-good", Refused(r"1 problem.*'images/b\.png'"))(
    lambda w: w.zip([("images/a.png", png(1)), ("images/b.png", png(2)[:500]), ("images/c.png", png(3))]))
case("image-other-files-noted", Accepted(1, 0, note=r"run\.sh: not an image"))(
    lambda w: w.folder({"a.png": png(1), "run.sh": "rm -rf /\n"}))


@case("folder-symlink-out-skipped", Accepted(1, 0))
def _(w):
    go = w.folder({"a.png": png(1)})
    (w.data / "link.png").symlink_to(w.secret)
    (w.data / "linked").symlink_to(w.outside, target_is_directory=True)
    return go


case("folder-unicode-names", Accepted(3, 0))(
    lambda w: w.folder({"猫.png": png(1), unicodedata.normalize("NFC", "café.png"): png(2),
                        unicodedata.normalize("NFD", "café.png"): png(3)}))
case("folder-newline-name", Accepted(1, 0))(lambda w: w.folder({"a\nb.png": png(1)}))


@case("folder-name-not-utf8", Accepted(1, 0))
def _(w):
    go = w.folder({})
    (w.data / os.fsdecode(b"caf\xe9 \xff.png")).write_bytes(png(1))
    return go



# -- COCO: file names -------------------------------------------------------------------------------------


def coco_naming(file_name):
    def build(w):
        doc = coco(1, [ann()])
        doc["images"][0]["file_name"] = file_name(w) if callable(file_name) else file_name
        return w.coco_folder(doc)
    return build


case("coco-file-name-absolute-secret", Refused(r"images\[0\]\.file_name .*is an absolute path"))(
    coco_naming(lambda w: str(w.secret)))
case("coco-file-name-dotdot", Refused(r"images\[0\]\.file_name '\.\./outside/secret\.png' climbs out"))(
    coco_naming("../outside/secret.png"))
case("coco-file-name-images-dotdot", Refused(r"file_name 'images/\.\./\.\./outside/secret\.png' climbs out"))(
    coco_naming("images/../../outside/secret.png"))
case("coco-file-name-backslash", Refused(r"file_name .*climbs out"))(coco_naming("..\\outside\\secret.png"))
case("coco-file-name-drive", Refused(r"file_name .*absolute path"))(coco_naming("C:\\secret.png"))
case("coco-file-name-nul", Refused(r"file_name .*NUL"))(coco_naming("img1.png\0../../secret.png"))
case("coco-file-name-empty", Refused(r"images\[0\]\.file_name must be a non-empty text"))(coco_naming(""))
case("coco-file-name-only-dots", Refused(r"images\[0\]\.file_name is empty"))(coco_naming("./."))
case("coco-file-name-number", Refused(r"images\[0\]\.file_name must be a non-empty text, got 42"))(coco_naming(42))
case("coco-file-name-list", Refused(r"images\[0\]\.file_name must be a non-empty text"))(coco_naming(["img1.png"]))
case("coco-file-name-folder", Refused(r"the image 'images' is not in the dataset"))(coco_naming("images"))
case("coco-file-name-missing-image", Refused(r"'secret\.png' is not in the dataset"))(coco_naming("secret.png"))
case("coco-file-name-over-long", Refused(r"is not in the dataset"))(coco_naming("z" * 300 + ".png"))
case("coco-file-name-dot-segments-inside", Accepted(1, 1))(coco_naming("./images/./img1.png"))
case("coco-file-name-bare-name-found-in-images", Accepted(1, 1))(coco_naming("img1.png"))


@case("coco-file-name-symlink-to-secret", Refused(r"'link\.png' is not in the dataset"))
def _(w):
    go = coco_naming("link.png")(w)
    (w.data / "images" / "link.png").symlink_to(w.secret)
    return go


@case("coco-file-name-through-symlinked-folder", Refused(r"'shared/secret\.png' is not in the dataset"))
def _(w):
    go = coco_naming("shared/secret.png")(w)
    (w.data / "shared").symlink_to(w.outside, target_is_directory=True)
    return go


@case("coco-file-name-ambiguous", Refused(r"matches several files"))
def _(w):
    doc = coco(1, [ann()])
    doc["images"][0]["file_name"] = "sub/img1.png"
    return w.coco_folder(doc, extra={"train/img1.png": png(5), "val/img1.png": png(6)})


@case("coco-file-name-not-an-image", Refused(r"'notes\.txt'"))
def _(w):
    w.write({"notes.txt": "hello"})
    return coco_naming("notes.txt")(w)


@case("coco-two-files-list-one-image", Refused(r"lists too"))
def _(w):
    w.write({"second.json": coco(1, [ann()])})
    return w.coco_folder(coco(1, [ann()]))


@case("coco-import-coco-images-dir-dotdot", Refused(r"climbs out"))
def _(w):
    doc = coco(1, [ann()])
    doc["images"][0]["file_name"] = "../outside/secret.png"
    w.write({"labels.json": doc}, w.uploads)
    w.write({"img1.png": png(1)})
    return lambda project: import_coco(project, w.uploads / "labels.json", w.data)


@case("coco-import-coco-annotations-layout", Accepted(2, 3))
def _(w):
    doc = coco(2, [ann(), ann(image_id=2), ann(image_id=2, bbox=(0, 0, 64, 48))])
    for im in doc["images"]:
        im["file_name"] = "images/" + im["file_name"]
    w.write({"annotations/instances.json": doc, "images/img1.png": png(1), "images/img2.png": png(2)})
    return lambda project: import_coco(project, w.data / "annotations" / "instances.json")


# -- COCO: structure --------------------------------------------------------------------------------------


def coco_doc(mutate):
    def build(w):
        doc = coco(1, [ann()])
        mutate(doc)
        return w.coco_folder(doc, n_images=1)
    return build


case("coco-annotations-null", Refused(r"'annotations' must be a list, got null"))(
    coco_doc(lambda d: d.update(annotations=None)))
case("coco-images-not-a-list", Refused(r"'images' must be a list, got dict"))(
    coco_doc(lambda d: d.update(images={"1": "img1.png"})))
case("coco-missing-categories", Refused(r"'categories' must be a list"))(coco_doc(lambda d: d.pop("categories")))
case("coco-category-without-name", Refused(r"categories\[0\]\.name must be a non-empty text"))(
    coco_doc(lambda d: d.update(categories=[{"id": 1}])))
case("coco-category-name-not-text", Refused(r"categories\[0\]\.name"))(
    coco_doc(lambda d: d.update(categories=[{"id": 1, "name": {"$gt": ""}}])))
case("coco-duplicate-category-id", Refused(r"categories\[1\]\.id must be a unique"))(
    coco_doc(lambda d: d.update(categories=[{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}])))
case("coco-duplicate-category-name", Refused(r"categories\[1\]: the category name 'Cat' is used twice"))(
    coco_doc(lambda d: d.update(categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "Cat"}])))
case("coco-unknown-image-id", Refused(r"annotations\[0\]\.image_id 99 is not the id of any image"))(
    coco_doc(lambda d: d["annotations"][0].update(image_id=99)))
case("coco-unknown-category-id", Refused(r"annotations\[0\]\.category_id 7 is not the id of any category"))(
    coco_doc(lambda d: d["annotations"][0].update(category_id=7)))
case("coco-image-id-bool", Refused(r"images\[0\]\.id must be a unique number"))(
    coco_doc(lambda d: d["images"][0].update(id=True)))
case("coco-width-1e9", Refused(r"images\[0\]\.width must be a whole number"))(
    coco_doc(lambda d: d["images"][0].update(width=10**9)))
case("coco-size-mismatch", Refused(r"'images/img1\.png'|images/img1\.png: the labels are for a 100x100 image"))(
    coco_doc(lambda d: d["images"][0].update(width=100, height=100)))
case("coco-top-level-array-import-coco", Refused(r"not a COCO file"))(
    lambda w: (w.write({"a.json": [1, 2]}, w.uploads), lambda p: import_coco(p, w.uploads / "a.json"))[1])
case("coco-top-level-array-next-to-images", Accepted(2, 0, note=r"a\.json: a JSON file that is not COCO"))(
    lambda w: w.folder({"a.json": [{"images": []}], "x.png": png(1), "y.png": png(2)}))
case("coco-valid-json-not-coco-next-to-images", Accepted(2, 0, note=r"meta\.json: a JSON file that is not COCO"))(
    lambda w: w.folder({"meta.json": {"hello": "world"}, "x.png": png(1), "y.png": png(2)}))
case("coco-not-json", Refused(r"annotations\.json is not valid JSON"))(
    lambda w: w.folder({"annotations.json": "{'images': [", "x.png": png(1)}))
case("coco-invalid-utf8", Refused(r"annotations\.json is not valid JSON"))(
    lambda w: w.folder({"annotations.json": b"\xff\xfe\x00{\x80\x81", "x.png": png(1)}))
case("coco-deeply-nested-100k", Refused(r"annotations\.json is nested too deeply"))(
    lambda w: w.folder({"annotations.json": "[" * 100_000 + "]" * 100_000, "x.png": png(1)}))
case("coco-deeply-nested-object-100k", Refused(r"annotations\.json is nested too deeply"))(
    lambda w: w.folder({"annotations.json": '{"a":' * 100_000 + "1" + "}" * 100_000, "x.png": png(1)}))


def _nested(depth: int, leaf) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


case("coco-nested-values-in-fields", Refused(r"images\[0\]\.file_name must be a non-empty text"))(
    coco_doc(lambda d: d["images"][0].update(file_name=_nested(400, "x"))))
case("coco-nested-segmentation", Refused(r"annotations\[0\]\.segmentation\[0\] must be a flat list"))(
    coco_doc(lambda d: d["annotations"][0].update(segmentation=_nested(400, 1.0))))


@case("coco-over-100kb-categories-last", Accepted(1, 1500))
def _(w):
    doc = coco(1, [dict(ann(bbox=(k % 40, k % 30, 10, 10)), id=k) for k in range(1500)])
    doc["categories"] = doc.pop("categories")  # written last, after 100 kB of annotations
    w.write({"annotations.json": json.dumps(doc), "images/img1.png": png(1)})
    assert (w.data / "annotations.json").stat().st_size > 100_000
    assert (w.data / "annotations.json").read_text().rstrip().endswith('"cat"}]}')
    return lambda project: import_folder(project, w.data)


@case("coco-five-images-one-bad-box", Refused(r"1 problem.*annotations\[2\]\.bbox\[2\]"))
def _(w):
    anns = [dict(ann(image_id=k), id=k) for k in range(1, 6)]
    anns[2]["bbox"] = [4, 4, float("nan"), 10]
    return w.coco_folder(coco(5, anns))


# -- COCO: numbers ----------------------------------------------------------------------------------------

for _id, _bbox, _pattern in [
    ("3-numbers", [1, 2, 3], r"bbox must be a list of 4 numbers"),
    ("strings", ["1", "2", "3", "4"], r"bbox\[0\] must be a number, got '1'"),
    ("bools", [True, 0, 10, 10], r"bbox\[0\] must be a number, got True"),
    ("nan", [float("nan"), 0, 10, 10], r"bbox\[0\] must be a finite number, got nan"),
    ("inf", [0, 0, float("inf"), 10], r"bbox\[2\] must be a finite number, got inf"),
    ("1e9", [1e9, 0, 10, 10], r"bbox\[0\] = 1e\+09 is far outside the image"),
    ("1e9-width", [0, 0, 1e9, 10], r"bbox has width 1e\+09"),
    ("negative-width", [10, 10, -5, 10], r"bbox has width -5"),
    ("null", None, r"bbox must be a list of 4 numbers"),
]:
    case(f"coco-bbox-{_id}", Refused(r"annotations\[0\]\." + _pattern))(
        coco_doc(lambda d, b=_bbox: d["annotations"][0].update(bbox=b)))

_square = [4, 4, 30, 4, 30, 30, 4, 30]
for _id, _poly, _pattern in [
    ("nan", [[float("nan")] + _square[1:]], r"segmentation\[0\]\[0\] must be a finite number, got nan"),
    ("inf", [_square[:3] + [float("-inf")] + _square[4:]], r"segmentation\[0\]\[3\] must be a finite number, got -inf"),
    ("1e9", [[0, 0, 1e9, 0, 1e9, 1e9]], r"segmentation\[0\]\[2\] = 1e\+09 is far outside"),
    ("1e11", [[0, 0, 1e11, 0, 1e11, 1e11]], r"segmentation\[0\]\[2\] = 1e\+11 is far outside"),
    ("odd-count", [_square[:7]], r"segmentation\[0\] must be a flat list of x, y pairs"),
    ("2-points", [[0, 0, 10, 10]], r"segmentation\[0\] must be a flat list of x, y pairs with at least 3 points"),
    ("100k-points", [[float(k % 60) for k in range(200_000)]], r"segmentation has more than 20000 points"),
    ("strings", [["1"] * 6], r"segmentation\[0\]\[0\] must be a number"),
    ("not-a-list", "polygon", r"segmentation must be a non-empty list of polygons"),
]:
    case(f"coco-polygon-{_id}", Refused(r"annotations\[0\]\." + _pattern))(
        coco_doc(lambda d, s=_poly: d["annotations"][0].update(segmentation=s)))


@case("coco-polygon-endless-outline", Refused(r"annotations\[0\]\.segmentation"))
def _(w):
    """20000 points zigzagging across a 1000x800 image: every number is in range, the outline is 60 M px."""
    zigzag = [v for k in range(20_000) for v in ((-900.0, 10.0) if k % 2 else (1900.0, 790.0))]
    doc = coco(1, [ann(bbox=(0, 0, 100, 100), segmentation=[zigzag])], size=(1000, 800))
    w.write({"annotations.json": doc, "images/img1.png": flat_png(1000, 800)})
    return lambda project: import_folder(project, w.data)


_area = W * H
for _id, _rle, _pattern in [
    ("counts-past-the-image", {"size": [H, W], "counts": [_area, _area]}, r"counts covers 6144 pixels"),
    ("counts-short", {"size": [H, W], "counts": [10, 20]}, r"counts covers 30 pixels"),
    ("wrong-size", {"size": [480, 640], "counts": [480 * 640]}, r"size must be the image's \[height, width\] = \[48, 64\]"),
    ("huge-size", {"size": [10**6, 10**6], "counts": "0"}, r"size must be the image's"),
    ("negative-run", {"size": [H, W], "counts": [-10, _area + 10]}, r"counts\[0\] must be a whole number >= 0"),
    ("float-runs", {"size": [H, W], "counts": [0.5, _area - 0.5]}, r"counts\[0\] must be a whole number"),
    ("garbage-string", {"size": [H, W], "counts": "~~~~\x00\x01"}, r"counts holds the character '~'"),
    ("string-past-the-image", {"size": [H, W], "counts": "0ooooooo0"}, r"(too long|corrupt)"),
    ("string-ends-mid-run", {"size": [H, W], "counts": "1o"}, r"ends in the middle of a run"),
    ("no-counts", {"size": [H, W]}, r"must be an RLE with 'size' and 'counts'"),
]:
    case(f"coco-rle-{_id}", Refused(r"annotations\[0\]\.segmentation.*" + _pattern))(
        coco_doc(lambda d, r=_rle: d["annotations"][0].update(segmentation=r)))

case("coco-rle-valid", Accepted(1, 1))(
    coco_doc(lambda d: d["annotations"][0].update(segmentation={"size": [H, W], "counts": [100, 50, _area - 150]})))
case("coco-bbox-1e999-literal", Refused(r"annotations\[0\]\.bbox\[0\] must be a finite number, got inf"))(
    lambda w: w.folder({"annotations.json": json.dumps(coco(1, [ann(bbox=[12345.5, 0, 10, 10])])).replace("12345.5", "1e999"),
                        "images/img1.png": png(1)}))
case("coco-id-past-4300-digits", Refused(r"annotations\.json is not valid JSON"))(
    lambda w: w.folder({"annotations.json": json.dumps(coco(1, [ann()])).replace('"id": 1,', '"id": ' + "7" * 5000 + ",", 1),
                        "images/img1.png": png(1)}))
case("coco-in-a-zip-file-name-dotdot", Refused(r"images\[0\]\.file_name '\.\./\.\./outside/secret\.png' climbs out"))(
    lambda w: w.zip([("annotations.json", json.dumps(coco(1, [ann()])).replace("img1.png", "../../outside/secret.png")),
                     ("images/img1.png", png(1))]))
case("coco-score-nan", Refused(r"annotations\[0\]\.score must be a finite number"))(
    coco_doc(lambda d: d["annotations"][0].update(score=float("nan"))))
case("coco-valid-control", Accepted(2, 3))(
    lambda w: w.coco_folder(coco(2, [ann(), ann(image_id=2, segmentation=[_square]), ann(image_id=2, bbox=(-10, -10, 100, 80))])))

# -- YOLO ---------------------------------------------------------------------------------------------------

for _id, _line, _pattern in [
    ("box-nan", "0 nan 0.5 0.1 0.1", r"labels/a\.txt:1: value 1 is nan"),
    ("box-inf", "0 0.5 inf 0.1 0.1", r"labels/a\.txt:1: value 2 is inf"),
    ("box-1e9", "0 0.5 0.5 1e9 0.1", r"labels/a\.txt:1: value 3 is 1e\+09"),
    ("seg-1e9", "0 0 0 1e9 0 1e9 1e9", r"labels/a\.txt:1: value 3 is 1e\+09"),
    ("seg-1e11", "0 0 0 1e11 0 1e11 1e11", r"labels/a\.txt:1: value 3 is 1e\+11"),
    ("seg-nan", "0 0.1 0.1 nan 0.1 0.5 0.5", r"labels/a\.txt:1: value 3 is nan"),
    ("seg-inf", "1 0.1 0.1 0.9 0.1 -inf 0.5", r"labels/a\.txt:1: value 5 is -inf"),
    ("class-out-of-range", "5 0.5 0.5 0.1 0.1", r"labels/a\.txt:1: class 5 is not one of data\.yaml's 2 names"),
    ("class-negative", "-1 0.5 0.5 0.1 0.1", r"labels/a\.txt:1: class -1"),
    ("class-huge", "9" * 5000 + " 0.5 0.5 0.1 0.1", r"labels/a\.txt:1: not a YOLO label line"),
    ("non-numeric", "cat 0.5 0.5 0.1 0.1", r"labels/a\.txt:1: not a YOLO label line"),
    ("five-values", "0 0.5 0.5 0.1 0.1 0.1", r"labels/a\.txt:1: expected 4 numbers"),
    ("zero-width", "0 0.5 0.5 0 0.1", r"labels/a\.txt:1: the box's width and height must be above 0"),
    ("flat-polygon", "0 0.1 0.1 0.2 0.1 0.3 0.1", r"labels/a\.txt:1: the polygon has no area"),
    ("second-line-bad", "0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1", r"labels/a\.txt:2: expected 4 numbers"),
]:
    case(f"yolo-{_id}", Refused(_pattern))(lambda w, line=_line: w.yolo(line + "\n"))

case("yolo-many-bad-lines-listed-once", Refused(r"^the dataset cannot be imported: 12 problem\(s\).*:1: value 1 is nan"
                                                 r".*:10: value 1 is nan[^\n]*\n- \.\.\. and 2 more$"))(
    lambda w: w.yolo("0 nan 0.5 0.1 0.1\n" * 12))
case("yolo-binary-label", Refused(r"labels/a\.txt is not a text file"))(lambda w: w.yolo(bytes(range(128, 256)) * 4))
case("yolo-nul-bytes-label", Refused(r"labels/a\.txt:1: not a YOLO label line"))(lambda w: w.yolo(b"\x00\x00 0.5\n"))
case("yolo-more-objects-than-the-limit", Refused(r"labels/a\.txt holds more than 3 objects"))(
    lambda w: w.yolo("0 0.1 0.1 0.2 0.1 0.1 0.2\n" * 50, limits=ImportLimits(max_objects=3)))
case("yolo-label-over-the-size-limit", Refused(r"labels/a\.txt is .* MB, more than"))(
    lambda w: w.yolo("0 0.5 0.5 0.1 0.1\n" * 200, limits=ImportLimits(max_label_bytes=1000)))
case("yolo-valid-control", Accepted(1, 2))(lambda w: w.yolo("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.9 0.1 0.5 0.8\n\n"))
case("yolo-yaml-missing-names", Refused(r"data\.yaml has no class names"))(lambda w: w.yolo("", yaml_text="nc: 2\n"))
case("yolo-yaml-names-gaps", Refused(r"data\.yaml: 'names' as a mapping must number the classes 0, 1, 2"))(
    lambda w: w.yolo("", yaml_text="names:\n  0: cat\n  2: dog\n"))
case("yolo-yaml-names-mapping", Accepted(1, 1))(lambda w: w.yolo("1 0.5 0.5 0.2 0.2\n", yaml_text="names: {1: dog, 0: cat}\n"))
case("yolo-yaml-names-duplicate", Refused(r"the class name 'Cat' is listed twice"))(lambda w: w.yolo("", names=("cat", "Cat")))
case("yolo-yaml-names-nested", Refused(r"data\.yaml: names\[0\] must be a non-empty text"))(
    lambda w: w.yolo("", yaml_text="names: [[a, b]]\n"))
case("yolo-yaml-not-yaml", Refused(r"data\.yaml is not valid YAML"))(lambda w: w.yolo("", yaml_text="names: [a, b\n  - : :"))
case("yolo-yaml-deeply-nested-flow", Refused(r"data\.yaml nests lists or mappings more than \d+ deep"))(
    lambda w: w.yolo("", yaml_text="names: " + "[" * 50_000 + "]" * 50_000))  # took PyYAML 78 s before
case("yolo-yaml-deeply-nested-block", Refused(r"data\.yaml is not valid YAML"))(
    lambda w: w.yolo("", yaml_text="names:\n" + "- " * 5000 + "cat\n"))
case("yolo-yaml-over-1mb", Refused(r"data\.yaml is larger than 1 MB"))(
    lambda w: w.yolo("", yaml_text="names: [cat]\n" + "# padding\n" * 110_000))
case("yolo-yaml-python-tag", Refused(r"data\.yaml is not valid YAML"))(
    lambda w: w.yolo("", yaml_text="names: !!python/object/apply:os.system ['touch pwned']\n"))
case("yolo-yaml-binary", Refused(r"data\.yaml is not valid YAML"))(lambda w: w.yolo("", yaml_text=b"\xff\xfe\x00\x81names"))


@case("yolo-yaml-billion-laughs", Refused(r"data\.yaml uses YAML aliases"))
def _(w):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, 9):
        lines.append(f"{chr(97 + k)}: &{chr(97 + k)} [" + ",".join([f"*{chr(96 + k)}"] * 9) + "]")
    lines.append("names: *i")
    return w.yolo("", yaml_text="\n".join(lines) + "\n")


@case("yolo-label-symlink-to-outside", Accepted(1, 0))
def _(w):
    w.write({"data.yaml": "names: [cat]\n", "images/a.png": png(1)})
    (w.data / "labels").mkdir()
    (w.data / "labels" / "a.txt").symlink_to(w.outside / "secret.txt")
    return lambda project: import_folder(project, w.data)


@case("yolo-data-yaml-symlink-to-outside", Refused(r"has no data\.yaml"))
def _(w):
    w.write({"images/a.png": png(1), "labels/a.txt": "0 0.5 0.5 0.2 0.2\n"})
    (w.data / "data.yaml").symlink_to(w.outside / "data.yaml")
    return lambda project: import_yolo(project, w.data)


@case("yolo-data-yaml-symlink-beside-a-real-one", Accepted(1, 1))
def _(w):
    w.write({"dataset.yaml": "names: [cat]\n", "images/a.png": png(1), "labels/a.txt": "0 0.5 0.5 0.2 0.2\n"})
    (w.data / "data.yaml").symlink_to(w.outside / "data.yaml")
    return lambda project: import_folder(project, w.data)


# -- class names (issue 24, items 6, 7, 12): the project's one rule, refused in the dataset's words --------------

BAD_NAMES = {  # id -> (name, what the refusal says)
    "control": ("a\x01b", r"holds a control character \(U\+0001\)"),
    "nul": ("a\x00b", r"holds a control character \(U\+0000\)"),
    "newline": ("cat\ndog", r"holds a line break \(U\+000A\)"),
    "carriage-return": ("cat\rdog", r"holds a line break \(U\+000D\)"),
    "tab": ("cat\tdog", r"holds a tab \(U\+0009\)"),
    "delete": ("cat\x7f", r"holds a control character \(U\+007F\)"),
    "next-line": ("cat\x85dog", r"holds a line break \(U\+0085\)"),
    "line-separator": ("cat\u2028dog", r"holds a line break \(U\+2028\)"),
    "bidi-override": ("\u202egnp.tac", r"holds a bidirectional control character \(U\+202E\)"),
    "noncharacter": ("cat\ufffe", r"holds a noncharacter \(U\+FFFE\)"),
    "lone-surrogate": ("cat\ud800", r"holds a lone surrogate \(U\+D800\)"),  # was a UnicodeEncodeError traceback
    "over-long": ("n" * 201, r"is 201 characters long; the limit is 200"),
}
GOOD_NAMES = {"emoji": "🐱", "zwj-emoji": "👨\u200d👩\u200d👧", "markup": 'a & b <c> "d"', "yaml-looking": "- [x]: *y #z",
              "arabic": "قطة", "nbsp": "a\xa0b", "longest": "n" * 200}

for _id, (_name, _pattern) in BAD_NAMES.items():
    case(f"coco-category-name-{_id}", Refused(r"categories\[0\]\.name '.*" + _pattern + ".*rename it in the dataset"))(
        coco_doc(lambda d, n=_name: d.update(categories=[{"id": 1, "name": n}])))
    case(f"yolo-yaml-name-{_id}", Refused(r"data\.yaml: names\[1\] '.*" + _pattern))(  # escaped: valid YAML
        lambda w, n=_name: w.yolo("", yaml_text=f"names: [cat, {json.dumps(n)}]\n"))
for _id, _name in GOOD_NAMES.items():
    case(f"coco-category-name-{_id}", Accepted(1, 1))(coco_doc(lambda d, n=_name: d.update(categories=[{"id": 1, "name": n}])))
    case(f"yolo-yaml-name-{_id}", Accepted(1, 1))(
        lambda w, n=_name: w.yolo("1 0.5 0.5 0.2 0.2\n", yaml_text=f"names: [cat, {json.dumps(n, ensure_ascii=False)}]\n"))
case("yolo-yaml-name-emoji-as-escaped-surrogate-pair", Accepted(1, 1))(  # as a JSON writer spells it
    lambda w: w.yolo("1 0.5 0.5 0.2 0.2\n", yaml_text='names: [cat, "\\ud83d\\udc31"]\n'))
case("yolo-yaml-name-raw-control-byte", Refused(r"data\.yaml is not valid YAML"))(
    lambda w: w.yolo("", yaml_text="names: [cat, a\x01b]\n"))
case("coco-category-name-number", Refused(r"categories\[0\]\.name must be a non-empty text of at most 200 characters, "
                                         r"got 7"))(coco_doc(lambda d: d.update(categories=[{"id": 1, "name": 7}])))
case("yolo-yaml-name-number", Accepted(1, 1))(lambda w: w.yolo("1 0.5 0.5 0.2 0.2\n", yaml_text="names: [cat, 7]\n"))
case("coco-file-name-lone-surrogate", Refused(r"file_name: the image 'img1\\ud800\.png' is not in the dataset"))(
    coco_naming("img1\ud800.png"))

# -- boxes the project cannot keep: wholly outside their image (issue 24, item 7) ------------------------------

for _id, _bbox, _shown in [("right-of", (70, 4, 10, 10), r"70, 4, 80, 14"), ("below", (4, 50, 10, 10), r"4, 50, 14, 60"),
                           ("above", (4, -30, 10, 10), r"4, -30, 14, -20"), ("touching-the-edge", (64, 4, 5, 10), r"64, 4")]:
    case(f"coco-bbox-{_id}-the-image", Refused(r"annotations\[0\]\.bbox: the box \(" + _shown + r".*\) lies outside the "
                                               r"64x48 image"))(
        coco_doc(lambda d, b=_bbox: d["annotations"][0].update(bbox=list(b))))
case("coco-bbox-partly-outside", Accepted(1, 1))(coco_doc(lambda d: d["annotations"][0].update(bbox=[60, 40, 20, 20])))
for _id, _line in [("box-right-of", "0 1.5 0.5 0.2 0.2"), ("box-below", "0 0.5 1.5 0.2 0.2"),
                   ("box-left-of", "0 -0.2 0.5 0.2 0.2"), ("box-touching-the-edge", "0 1.05 0.5 0.1 0.1"),
                   ("polygon-outside", "0 1.1 1.1 1.5 1.1 1.5 1.5"), ("polygon-above", "1 0.1 -0.5 0.9 -0.5 0.5 -0.1")]:
    case(f"yolo-{_id}", Refused(r"labels/a\.txt:1: the box \(.*\) lies outside the 64x48 image"))(
        lambda w, line=_line: w.yolo(line + "\n"))
case("yolo-box-partly-outside", Accepted(1, 1))(lambda w: w.yolo("0 0.95 0.5 0.2 0.2\n"))
case("yolo-polygon-partly-outside", Accepted(1, 1))(lambda w: w.yolo("0 0.9 0.9 1.3 0.9 1.3 1.3\n"))


# -- import_path ----------------------------------------------------------------------------------------------

case("path-unknown-kind", Refused(r"notes\.txt is not a zip, a COCO \.json or a folder"))(
    lambda w: (w.write({"notes.txt": "x"}, w.uploads), lambda p: import_path(p, w.uploads / "notes.txt"))[1])
case("path-missing", Refused(r"nothing: no such file or folder"))(lambda w: lambda p: import_path(p, w.uploads / "nothing"))
case("path-missing-zip", Refused(r"not a readable zip file"))(lambda w: lambda p: import_path(p, w.uploads / "nothing.zip"))


# -- the harness ----------------------------------------------------------------------------------------------

_WATCH = {"on": False, "events": []}
_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.link", "os.symlink", "os.truncate", "os.chmod",
                 "os.utime", "shutil.rmtree", "shutil.copymode", "shutil.copystat", "sqlite3.connect"}
_READ_EVENTS = {"os.listdir", "os.scandir"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(event, args):
    if _WATCH["on"] and (event == "open" or event == "shutil.copyfile" or event in _WRITE_EVENTS or event in _READ_EVENTS):
        if event in ("os.remove", "os.rmdir", "os.mkdir") and isinstance(args[-1], int) and args[-1] >= 0:
            # relative to a folder's descriptor (shutil.rmtree does that): name the folder while it is open
            folder = _fd_path(args[-1])
            args = (None if folder is None else os.path.join(folder, os.fsdecode(args[0])), *args[1:-1], None)
        _WATCH["events"].append((event, args))


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")  # Linux; elsewhere such events go unchecked
    except OSError:
        return None


_HOOKED = []


def _paths(event, args) -> tuple[list, list]:
    """(paths read, paths written) by one audited event."""
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                 (mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
        return ([], [path]) if writes else ([path], [])
    if event == "shutil.copyfile":
        return [args[0]], [args[1]]
    if event in _READ_EVENTS:
        return [args[0] if args else "."], []
    if event in ("os.rename", "os.link", "os.symlink"):
        return [], [args[0], args[1]] if event == "os.rename" else [args[1]]
    return [], [args[0]]


def _under(path, root: Path) -> bool:
    return os.path.commonpath([path, str(root)]) == str(root)


def check_accesses(events, w: World, project_dir: Path, temp: Path) -> None:
    outside = w.outside.resolve()
    for event, args in events:
        reads, writes = _paths(event, args)
        for path in reads + writes:
            if isinstance(path, int) or path is None:
                continue
            path = os.fsdecode(path)
            for form in {os.path.abspath(path), os.path.realpath(path)}:
                assert not _under(form, outside), f"{event} touched {form} outside the dataset"
        for path in writes:
            if isinstance(path, int) or path is None or path == ":memory:":
                continue
            real = os.path.realpath(os.fsdecode(path))
            if "__pycache__" in Path(real).parts:  # Python caching a module imported on first use
                continue
            assert _under(real, project_dir) or _under(real, temp), f"{event} wrote {real}, outside the project"


def snapshot(root: Path, skip: set[Path]) -> dict:
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def no_server_path(text: str, tmp: Path) -> None:
    for root in {str(tmp), str(tmp.resolve()), tempfile.gettempdir()}:
        assert root not in text, f"the message names a server path: {text!r}"
    assert "/tmp/" not in text and "\\Temp\\" not in text, f"the message names a server path: {text!r}"


@pytest.fixture
def world(tmp_path, monkeypatch):
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED.append(True)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # the importer's extraction folder, watched below
    return World(tmp_path)


def run_case(w: World, build, classes=("existing",)):
    """Build, import into a fresh project; returns (project dir, ImportReport or the refusal message)."""
    go = build(w)
    project_dir = w.tmp / "project"
    with Project.create(project_dir, classes=list(classes)) as project:
        temp = Path(tempfile.gettempdir())
        before = snapshot(w.tmp, {project_dir, temp})
        _WATCH["events"] = []
        _WATCH["on"] = True
        try:
            outcome = go(project)
        except (DatasetError, UnsafeZipError) as err:
            outcome = str(err)
        finally:
            _WATCH["on"] = False
        check_accesses(_WATCH["events"], w, project_dir.resolve(), temp.resolve())
        assert snapshot(w.tmp, {project_dir, temp}) == before, "files outside the project changed"
        assert list(temp.iterdir()) == [], "the importer left temporary files behind"
        secret = w.secret.read_bytes()
        for path in (project_dir / "images").iterdir():
            assert path.read_bytes() != secret, f"{path.name} in the project is the secret file"
        return project_dir, outcome, project.stats(), project.classes


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case, world):
    if not SYMLINKS and "symlink" in case.id:
        pytest.skip("symlinks need privileges on Windows")
    project_dir, outcome, stats, classes = run_case(world, case.build)
    if isinstance(case.verdict, Refused):
        assert isinstance(outcome, str), f"accepted ({outcome}), expected a refusal matching {case.verdict.pattern!r}"
        assert re.search(case.verdict.pattern, outcome, re.S), outcome
        no_server_path(outcome, world.tmp)
        assert stats["images"] == 0 and stats["objects"] == 0 and classes == ["existing"], stats
        assert list((project_dir / "images").iterdir()) == []
    else:
        assert not isinstance(outcome, str), f"refused: {outcome}"
        assert (outcome.images, outcome.objects) == (case.verdict.images, case.verdict.objects), outcome
        assert (stats["images"], stats["objects"]) == (case.verdict.images, case.verdict.objects), stats
        assert len([p for p in (project_dir / "images").iterdir() if not p.name.startswith(".")]) == outcome.images
        notes = "\n".join(outcome.problems)
        if case.verdict.note:
            assert re.search(case.verdict.note, notes), notes
        no_server_path(notes, world.tmp)


def test_the_watch_sees_reads_and_writes_outside(world):
    """The harness itself: an "importer" that reads secret.png, or writes beside the dataset, is caught."""
    with pytest.raises(AssertionError, match="outside the dataset"):
        run_case(world, lambda w: lambda project: w.secret.read_bytes())
    _rmtree(world.tmp / "project")
    with pytest.raises(AssertionError, match="outside the project"):
        run_case(world, lambda w: lambda project: (w.uploads / "planted.txt").write_text("x"))


def test_the_corpus_is_large_and_varied():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    refused = sum(isinstance(c.verdict, Refused) for c in CASES)
    assert refused >= 40 and len(CASES) - refused >= 15


# -- what lies outside is never revealed ---------------------------------------------------------------------

SPELLINGS = {
    "absolute": lambda w, name: str(w.outside / name),
    "dotdot": lambda w, name: f"../outside/{name}",
    "images-dotdot": lambda w, name: f"images/../../outside/{name}",
    "backslash": lambda w, name: f"..\\outside\\{name}",
    "bare-name": lambda w, name: name,
    "symlink": None,
    "symlinked-folder": None,
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_a_refusal_does_not_tell_whether_an_outside_file_exists(spelling, world):
    """secret.png exists outside the dataset, absent.png does not (same length): the messages differ only
    in the name."""
    if not SYMLINKS and "symlink" in spelling:
        pytest.skip("symlinks need privileges on Windows")
    messages = []
    for name in ("secret.png", "absent.png"):
        w = world
        for path in (w.data, w.tmp / "project"):
            if path.exists():
                _rmtree(path)
        w.data.mkdir()
        doc = coco(1, [ann()])
        if spelling == "symlink":
            file_name = "link.png"
        elif spelling == "symlinked-folder":
            file_name = f"shared/{name}"
        else:
            file_name = SPELLINGS[spelling](w, name)
        doc["images"][0]["file_name"] = file_name
        go = w.coco_folder(doc)
        if spelling == "symlink":
            (w.data / "link.png").symlink_to(w.outside / name)
        elif spelling == "symlinked-folder":
            (w.data / "shared").symlink_to(w.outside, target_is_directory=True)
        _, outcome, stats, _ = run_case(w, lambda _w, go=go: go)
        assert isinstance(outcome, str) and stats["images"] == 0, outcome
        messages.append(outcome.replace(name, "NAME"))
    assert messages[0] == messages[1]
    if spelling != "absolute":  # an absolute path is shown as given, which names the test's folder
        no_server_path(messages[0], world.tmp)


def _rmtree(path: Path) -> None:
    for folder, dirs, files in os.walk(path, topdown=False):
        for name in files + dirs:
            p = Path(folder, name)
            p.unlink() if p.is_symlink() or not p.is_dir() else p.rmdir()
    path.rmdir()


# -- the process survives -------------------------------------------------------------------------------------

FORMERLY_FATAL = {
    "yolo-seg-1e9.zip": [("data.yaml", b"names: [cat]\n"), ("images/a.png", png(1)), ("labels/a.txt", b"0 0 0 1e9 0 1e9 1e9\n")],
    "yolo-seg-1e11.zip": [("data.yaml", b"names: [cat]\n"), ("images/a.png", png(1)),
                          ("labels/a.txt", b"0 0 0 1e11 0 1e11 1e11\n")],
    "yolo-seg-nan.zip": [("data.yaml", b"names: [cat]\n"), ("images/a.png", png(1)), ("labels/a.txt", b"0 0 0 nan 0 1 1\n")],
}
for _tag, _poly in [("1e9", [0, 0, 1e9, 0, 1e9, 1e9]), ("1e11", [0, 0, 1e11, 0, 1e11, 1e11]),
                    ("nan", [0, 0, float("nan"), 0, 30, 30])]:
    FORMERLY_FATAL[f"coco-polygon-{_tag}.zip"] = [
        ("annotations.json", json.dumps(coco(1, [ann(segmentation=[_poly])])).encode()), ("images/img1.png", png(1))]


def test_formerly_fatal_inputs_do_not_kill_the_process(tmp_path):
    """These crashed the whole process inside pycocotools before the importer checked numbers itself; a
    child process imports each and must exit normally, printing each refusal."""
    for name, entries in FORMERLY_FATAL.items():
        (tmp_path / name).write_bytes(zip_bytes(entries))
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from gdino.formats.importing import import_zip
        from gdino.formats.validate import DatasetError
        from gdino.store import Project

        root = Path(sys.argv[1])
        with Project.create(root / "project") as project:
            for path in sorted(root.glob("*.zip")):
                try:
                    import_zip(project, path)
                except DatasetError as err:
                    print(path.name, "refused:", str(err).splitlines()[-1], flush=True)
                else:
                    print(path.name, "ACCEPTED", flush=True)
            print("images", project.stats()["images"])
    """)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len([line for line in lines if " refused: " in line]) == len(FORMERLY_FATAL), result.stdout
    assert "ACCEPTED" not in result.stdout and lines[-1] == "images 0"
    for line in lines[:-1]:
        assert re.search(r"(value \d is|far outside|finite)", line), line


# -- the import command: each bad source refused, the others imported (issue 24, item 7) -----------------------


def test_the_import_command_refuses_each_bad_source_in_one_line_and_imports_the_others(tmp_path):
    """The README: exit 1 when a source is refused, the other sources imported. A lone surrogate in a category
    name was a UnicodeEncodeError traceback (exit 1, nothing after it imported); a YOLO box outside its image
    stopped the command with exit 2 and the good source after it was not imported."""
    w = World(tmp_path)
    sources = {
        "surrogate": {"annotations.json": coco(1, [ann()], cats=[{"id": 1, "name": "cat\ud800"}]), "images/img1.png": png(1)},
        "good-coco": {"annotations.json": coco(1, [ann()], cats=[{"id": 1, "name": "🐱"}]), "images/img1.png": png(2)},
        "box-outside": {"data.yaml": "names: [cat]\n", "images/a.png": png(3), "labels/a.txt": "0 1.5 1.5 0.2 0.2\n"},
        "newline-name": {"data.yaml": 'names: ["cat\\ndog"]\n', "images/a.png": png(4), "labels/a.txt": "0 .5 .5 .2 .2\n"},
        "good-yolo": {"data.yaml": "names: [dog]\n", "images/b.png": png(5), "labels/b.txt": "0 0.5 0.5 0.2 0.2\n"},
    }
    for name, files in sources.items():
        w.write(files, tmp_path / name)
    project_dir = tmp_path / "project"
    result = subprocess.run([sys.executable, "-m", "gdino.cli", "import", *sources, "--out", str(project_dir)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    refused = {line.split(":")[1].strip(): line for line in result.stderr.splitlines() if line.startswith("gdino import: ")}
    assert sorted(refused) == ["box-outside", "newline-name", "surrogate"], result.stderr
    assert re.search(r"categories\[0\]\.name 'cat\\ud800' holds a lone surrogate", result.stderr)
    assert re.search(r"labels/a\.txt:1: the box \(.*\) lies outside the 64x48 image", result.stderr)
    assert re.search(r"names\[0\] 'cat\\ndog' holds a line break", result.stderr)
    assert "imported 1 image(s), 1 object(s) from good-coco" in result.stdout
    assert "imported 1 image(s), 1 object(s) from good-yolo" in result.stdout
    with Project.open(project_dir) as project:
        assert project.classes == ["🐱", "dog"]
        assert sorted((r.name, r.num_objects) for r in project.images()) == [("b.png", 1), ("img1.png", 1)]
