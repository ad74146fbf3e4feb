"""Safe zip extraction: hostile names, links, bombs, lying headers and corrupt files, on real zips."""

import os
import re
import stat
import struct
import sys
import zipfile

import pytest

from gdino.safezip import UnsafeZipError, extract_zip


def make_zip(path, entries, compression=zipfile.ZIP_DEFLATED):
    """entries: (name or ZipInfo, bytes) pairs, written as given (ZipInfo keeps hostile names verbatim)."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, data)
    return path


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def dirs(tmp_path):
    """(zip folder, target, sibling): the sibling holds one file and must never change."""
    (tmp_path / "zips").mkdir()
    (tmp_path / "sibling").mkdir()
    (tmp_path / "sibling" / "keep.txt").write_text("keep")
    return tmp_path / "zips", tmp_path / "target", tmp_path / "sibling"


def assert_refused(zip_path, target, message, **limits):
    """Extraction fails with `message`, and leaves nothing behind anywhere under the test's folder."""
    root = target.parent
    before = tree(root)
    with pytest.raises(UnsafeZipError, match=message):
        extract_zip(zip_path, target, **limits)
    assert tree(root) == before


def test_normal_zip_with_nested_folders(dirs):
    zips, target, _ = dirs
    entries = [("a.txt", b"top"), ("dir/", b""), ("dir/b.txt", b"middle"), ("dir/sub/c.bin", bytes(range(256)) * 10),
               ("__MACOSX/dir/._b.txt", b"junk"), ("dir/.DS_Store", b"junk"), ("dir/._c.bin", b"junk"),
               ("ok/../fine.txt", b"inside after all"), ("win\\style.txt", b"backslash")]
    paths = extract_zip(make_zip(zips / "ok.zip", entries), target)
    expected = ["a.txt", "dir/b.txt", "dir/sub/c.bin", "fine.txt", "win/style.txt"]
    assert sorted(str(p.relative_to(target.resolve())).replace(os.sep, "/") for p in paths) == expected
    assert all(p.is_absolute() and p.is_file() for p in paths)
    assert (target / "dir" / "sub" / "c.bin").read_bytes() == bytes(range(256)) * 10
    assert (target / "fine.txt").read_bytes() == b"inside after all"
    assert sorted(p.replace(os.sep, "/") for p in tree(target) if (target / p).is_file()) == expected


@pytest.mark.parametrize("name", ["../evil.txt", "../sibling/evil.txt", "dir/../../evil.txt", "..\\evil.txt"])
def test_path_traversal_is_refused(dirs, name):
    zips, target, sibling = dirs
    zip_path = make_zip(zips / "evil.zip", [("good.txt", b"fine"), (name, b"evil")])
    assert_refused(zip_path, target, f"{re.escape(repr(name))}.*climbs out")
    assert tree(sibling) == ["keep.txt"] and not target.exists()


@pytest.mark.parametrize("name", ["/tmp/evil", "C:/evil.txt", "c:\\windows\\evil.txt", "\\\\server\\share\\evil.txt"])
def test_absolute_paths_are_refused(dirs, name):
    zips, target, _ = dirs
    assert_refused(make_zip(zips / "abs.zip", [(name, b"evil")]), target, "absolute path")


def test_symlink_entry_is_refused(dirs):
    zips, target, _ = dirs
    link = zipfile.ZipInfo("innocent.jpg")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = make_zip(zips / "link.zip", [("a.txt", b"a"), (link, b"/etc/passwd")])
    assert_refused(zip_path, target, "'innocent.jpg' is a symbolic link")
    fifo = zipfile.ZipInfo("pipe")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    assert_refused(make_zip(zips / "fifo.zip", [(fifo, b"")]), target, "'pipe' is not a regular file")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlinked_folder_in_target_is_not_followed(dirs):
    zips, target, sibling = dirs
    target.mkdir()
    (target / "link").symlink_to(sibling, target_is_directory=True)
    assert_refused(make_zip(zips / "z.zip", [("link/evil.txt", b"evil")]), target, "outside")
    assert tree(sibling) == ["keep.txt"]


def test_too_many_files(dirs):
    zips, target, _ = dirs
    zip_path = make_zip(zips / "many.zip", [(f"f{k}.txt", b"x") for k in range(11)] + [("folder/", b"")])
    assert_refused(zip_path, target, "11 files, more than the limit of 10", max_files=10)
    assert len(extract_zip(zip_path, target, max_files=11)) == 11


def test_zip_bomb_by_ratio_and_by_total_size(dirs):
    zips, target, _ = dirs
    zip_path = zips / "bomb.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w") as f:
        for _ in range(50):
            f.write(bytes(1 << 20))  # 50 MB of zeros -> about 50 kB
    assert os.path.getsize(zip_path) < 200_000
    assert_refused(zip_path, target, r"'zeros.bin' expands \d+ times.*zip bomb")
    assert_refused(zip_path, target, "expands to more than 1000000 bytes", max_ratio=10_000, max_total_bytes=1_000_000)
    # small entries may compress as well as they like
    small = make_zip(zips / "small.zip", [("blank.txt", bytes(100_000))])
    assert len(extract_zip(small, target)) == 1


def patch_headers(zip_path, name, field, value):
    """Overwrite `field` ("size": uncompressed size, or "flags") of `name` in its local and central headers,
    as a hostile zip would (zipfile itself writes them consistently)."""
    fmt, local_at, central_at = {"size": ("<I", 22, 24), "flags": ("<H", 6, 8)}[field]
    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as zf:
        local = zf.getinfo(name).header_offset
    struct.pack_into(fmt, data, local + local_at, value)
    central = data.find(b"PK\x01\x02")  # the central directory's records, until the one for `name`
    while data[central + 46:central + 46 + len(name)] != name.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into(fmt, data, central + central_at, value)
    zip_path.write_bytes(bytes(data))


def test_lying_header_fails_and_partial_files_are_removed(dirs):
    zips, target, _ = dirs
    zip_path = make_zip(zips / "liar.zip", [("nested/first.txt", b"good"), ("nested/liar.bin", b"y" * 100_000)],
                        compression=zipfile.ZIP_STORED)
    patch_headers(zip_path, "nested/liar.bin", "size", 10)
    assert_refused(zip_path, target, "'nested/liar.bin'")
    assert not target.exists()  # the folders this call made are gone too


def test_corrupt_and_non_zip_files(dirs):
    zips, target, _ = dirs
    (zips / "text.zip").write_text("definitely not a zip")
    assert_refused(zips / "text.zip", target, "not a readable zip file")
    assert_refused(zips / "missing.zip", target, "not a readable zip file")
    good = make_zip(zips / "good.zip", [("a.txt", b"a" * 1000), ("b.txt", b"b" * 1000)], compression=zipfile.ZIP_STORED)
    raw = good.read_bytes()
    (zips / "truncated.zip").write_bytes(raw[: len(raw) // 2])
    assert_refused(zips / "truncated.zip", target, "not a readable zip file")
    flipped = bytearray(raw)
    flipped[raw.index(b"b" * 1000) + 500] ^= 0xFF  # corrupt b.txt's data: its CRC no longer matches
    (zips / "crc.zip").write_bytes(bytes(flipped))
    assert_refused(zips / "crc.zip", target, "could not extract the zip entry 'b.txt'.*CRC")


def test_duplicates_existing_files_and_encryption_are_refused(dirs):
    zips, target, _ = dirs
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = make_zip(zips / "dup.zip", [("a.txt", b"1"), ("a.txt", b"2")])
    assert_refused(dup, target, "holds 'a.txt' twice")
    target.mkdir()
    (target / "a.txt").write_text("mine")
    assert_refused(make_zip(zips / "one.zip", [("a.txt", b"theirs")]), target, "would overwrite")
    assert (target / "a.txt").read_text() == "mine"
    locked = make_zip(zips / "locked.zip", [("secret.txt", b"xx")])
    patch_headers(locked, "secret.txt", "flags", 0x1)
    assert_refused(locked, target, "'secret.txt' is encrypted")
