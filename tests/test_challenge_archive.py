"""Uploaded submission archives: hostile zips and tars are refused before (or while) anything is written, and
nothing lands outside the destination; valid ones extract to the submission root with fixed modes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from fashiongen.challenge.archive import (
    ArchiveError,
    ArchiveLimits,
    Member,
    UploadTooLarge,
    extract_archive,
    inspect_archive,
    receive_upload,
    receive_upload_async,
)

SMALL = ArchiveLimits(max_members=50, max_total_bytes=4 * 2**20, max_member_bytes=2 * 2**20, max_ratio=50.0)


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def submission_files(prefix: str = "") -> dict[str, bytes]:
    header = json.dumps({"format": "fashiongen-submission", "per_caption": 1, "resolution": 8}).encode()
    line = json.dumps({"file": "images/a_0.png", "caption_id": "a", "caption": "a red dress", "k": 0, "seed": 1}).encode()
    return {f"{prefix}submission.json": header, f"{prefix}submission.jsonl": line + b"\n",
            f"{prefix}images/a_0.png": png_bytes()}


def write_zip(path: Path, files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED, mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


def tar_member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for field, value in fields.items():
        setattr(info, field, value)
    return info, data


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w",
              format: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, mode, format=format) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def valid_tar_members(prefix: str = "") -> list[tuple[tarfile.TarInfo, bytes]]:
    return [tar_member(name, data) for name, data in submission_files(prefix).items()]


def snapshot(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def refuse(archive: Path, pattern: str, limits: ArchiveLimits = ArchiveLimits(), error: type = ArchiveError) -> None:
    """extract_archive refuses `archive` with a message matching `pattern` and writes nothing anywhere under its folder."""
    before = snapshot(archive.parent)
    destination = archive.parent / "out"
    with pytest.raises(error, match=pattern):
        extract_archive(archive, destination, limits)
    assert not destination.exists()
    assert snapshot(archive.parent) == before


def patch(path: Path, old: bytes, new: bytes, count: int) -> None:
    data = path.read_bytes()
    assert data.count(old) == count
    path.write_bytes(data.replace(old, new))


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name, rule", [("../evil.png", "climbs out"), ("images/../../evil.png", "climbs out"),
                                        ("/tmp/fashiongen-evil-{}", "absolute path"), ("C:\\evil.png", "absolute path"),
                                        ("c:/evil.png", "absolute path"), ("..\\evil.png", "climbs out"),
                                        ("\\\\server\\share\\evil.png", "absolute path")])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_member_outside_the_destination_is_refused(tmp_path: Path, kind: str, name: str, rule: str) -> None:
    name = name.format(uuid.uuid4().hex)
    files = {**submission_files(), name: b"owned"}
    archive = (write_zip(tmp_path / "upload.zip", files) if kind == "zip"
               else write_tar(tmp_path / "upload.tar", [tar_member(n, d) for n, d in files.items()]))
    refuse(archive, f"{re.escape(repr(name))} .*{rule}")
    assert not Path(name).is_absolute() or not Path(name).exists()
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_nul_in_a_zip_name_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.zip", {**submission_files(), "images/aXb.png": b"x"})
    patch(archive, b"images/aXb.png", b"images/a\x00b.png", 2)  # local header and central directory
    refuse(archive, r"'images/a\\x00b.png' has a NUL")


def test_over_deep_and_over_long_paths_are_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.zip", {**submission_files(), "a/b/c/d/e.png": b"x"})
    refuse(archive, "'a/b/c/d/e.png' is 5 levels deep; at most 4")
    long_name = "images/" + "x" * 300 + ".png"
    archive = write_zip(tmp_path / "upload.zip", {**submission_files(), long_name: b"x"})
    refuse(archive, "path longer than 400 bytes", ArchiveLimits(max_path_bytes=400))


@pytest.mark.parametrize("first, second", [("images/a_0.png", "images/a_0.png"), ("images/A_0.PNG", "images/a_0.png"),
                                           ("images", "images/"), ("./submission.json", "submission.json")])
def test_duplicate_names_are_refused(tmp_path: Path, first: str, second: str) -> None:
    members = valid_tar_members() + [tar_member(first.rstrip("/"), b"x")]
    members.append(tar_member(second.rstrip("/"), kind=tarfile.DIRTYPE) if second.endswith("/") else tar_member(second, b"y"))
    refuse(write_tar(tmp_path / "upload.tar", members), "duplicates")


def test_a_file_used_as_a_folder_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "upload.tar", [tar_member("notes", b"x"), tar_member("Notes/a.txt", b"y")]
                        + valid_tar_members())
    refuse(archive, "'Notes/a.txt' lies inside 'notes', which is a file")


# ---------------------------------------------------------------- member types


@pytest.mark.parametrize("kind, fields, words", [
    (tarfile.SYMTYPE, {"linkname": "/etc/passwd"}, "a symlink"), (tarfile.LNKTYPE, {"linkname": "submission.json"}, "a hardlink"),
    (tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}, "a character device"),
    (tarfile.BLKTYPE, {"devmajor": 8, "devminor": 0}, "a block device"), (tarfile.FIFOTYPE, {}, "a FIFO")])
def test_special_tar_members_are_refused(tmp_path: Path, kind: bytes, fields: dict, words: str) -> None:
    archive = write_tar(tmp_path / "upload.tar", valid_tar_members() + [tar_member("images/b_0.png", kind=kind, **fields)])
    refuse(archive, f"'images/b_0.png' is {words}; only regular files and folders")


def test_zip_symlink_and_encrypted_members_are_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "link.zip", {"images/b_0.png": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777)
    refuse(archive, "'images/b_0.png' is a symlink")
    archive = write_zip(tmp_path / "fifo.zip", {"images/b_0.png": b""}, mode=stat.S_IFIFO | 0o644)
    refuse(archive, "'images/b_0.png' is a device, FIFO or socket")
    archive = write_zip(tmp_path / "secret.zip", submission_files(), method=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the flag bits of local and central headers
        for match in re.finditer(re.escape(signature), bytes(data)):
            data[match.start() + offset] |= 0x1
    archive.write_bytes(bytes(data))
    refuse(archive, "'submission.json' is encrypted")


# ---------------------------------------------------------------- sizes and bombs


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_too_many_members_are_refused(tmp_path: Path, kind: str) -> None:
    files = {**submission_files(), **{f"images/x{n}.png": b"x" for n in range(10)}}
    archive = (write_zip(tmp_path / "upload.zip", files) if kind == "zip"
               else write_tar(tmp_path / "upload.tar", [tar_member(n, d) for n, d in files.items()]))
    refuse(archive, "has more than 8 members", ArchiveLimits(max_members=8))


def test_total_and_member_sizes_over_the_limits_are_refused(tmp_path: Path) -> None:
    files = {**submission_files(), **{f"images/b_{k}.png": os.urandom(3000) for k in range(4)}}
    archive = write_zip(tmp_path / "upload.zip", files, method=zipfile.ZIP_STORED)
    refuse(archive, "'images/b_3.png' brings the members to more than 10000 bytes", ArchiveLimits(max_total_bytes=10_000))
    refuse(archive, "'images/b_0.png' declares 3000 bytes; one file may hold at most 2000", ArchiveLimits(max_member_bytes=2000))


def test_zip_bomb_is_refused_by_its_ratio(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "bomb.zip", {**submission_files(), "images/zeros.png": bytes(8 * 2**20)})
    refuse(archive, r"'images/zeros.png' expands \d+ times, more than 200 \(a compression bomb\?\)")


def test_zip_whose_header_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    real = os.urandom(5000)
    archive = write_zip(tmp_path / "liar.zip", {**submission_files(), "images/b_0.png": real}, method=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size: claim 100 bytes
        for match in re.finditer(re.escape(signature), bytes(data)):
            if int.from_bytes(data[match.start() + offset: match.start() + offset + 4], "little") == len(real):
                data[match.start() + offset: match.start() + offset + 4] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    kind, members = inspect_archive(archive)  # the declared sizes pass...
    assert Member("images/b_0.png", 100, False) in members
    refuse(archive, r"'images/b_0.png' is damaged or truncated \(Bad CRC-32")  # ...the bytes do not


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_tar_bomb_is_refused(tmp_path: Path, mode: str) -> None:
    archive = write_tar(tmp_path / "bomb.tar", valid_tar_members() + [tar_member("images/zeros.png", bytes(2**20))], mode)
    refuse(archive, r"'images/zeros.png' brings the members to more than 50 times the archive's \d+ bytes", SMALL)


def test_pax_header_bomb_is_refused(tmp_path: Path) -> None:
    info, data = tar_member("images/b_0.png", b"x", pax_headers={"comment": "x" * 2**20})
    archive = write_tar(tmp_path / "pax.tar.gz", [(info, data)] + valid_tar_members(), "w:gz")
    refuse(archive, "tar headers or trailing data larger than its members need")


# ---------------------------------------------------------------- not archives, damaged archives


@pytest.mark.parametrize("content, rule", [(b"", "an empty file"), (os.urandom(4096), "neither a zip nor a tar file"),
                                           (b"\x1f\x8b" + os.urandom(600), "neither a zip nor a tar file")])
def test_files_that_are_not_archives_are_refused(tmp_path: Path, content: bytes, rule: str) -> None:
    archive = tmp_path / "upload.zip"
    archive.write_bytes(content)
    refuse(archive, f"the archive is .*{rule}")


def test_truncated_zip_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.zip", {**submission_files(), "images/b_0.png": os.urandom(20_000)})
    archive.write_bytes(archive.read_bytes()[:12_000])
    refuse(archive, "the archive is a damaged or truncated zip file")


@pytest.mark.parametrize("cut", [slice(0, 9000), slice(0, -4)])  # in a member's data; in the gzip trailer
def test_truncated_tar_gz_is_refused(tmp_path: Path, cut: slice) -> None:
    archive = write_tar(tmp_path / "upload.tgz", valid_tar_members() + [tar_member("images/b_0.png", os.urandom(20_000))],
                        "w:gz")
    archive.write_bytes(archive.read_bytes()[cut])
    refuse(archive, "the archive is a damaged or truncated tar file|'images/b_0.png' is damaged or truncated")


def test_tar_gz_with_a_bad_checksum_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "upload.tgz", valid_tar_members(), "w:gz")
    data = bytearray(archive.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32
    archive.write_bytes(bytes(data))
    refuse(archive, r"the archive is a damaged or truncated tar file \(CRC check failed")


# ---------------------------------------------------------------- the submission root


def test_archive_without_submission_json_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.zip", {"images/a_0.png": png_bytes(), "deep/team/submission.json": b"{}"})
    refuse(archive, "the archive has no submission.json at its top or in a single top-level folder")


def test_two_candidate_roots_are_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.zip", {**submission_files("team-a/"), **submission_files("team-b/")})
    refuse(archive, r"submission.json in 2 folders \(team-a, team-b\)")


def test_existing_destination_is_refused_and_kept(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.zip", submission_files())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- valid archives


def test_valid_zip_at_the_root_extracts_with_fixed_modes(tmp_path: Path) -> None:
    files = submission_files()
    archive = write_zip(tmp_path / "upload.bin", files, mode=stat.S_IFREG | stat.S_ISUID | 0o777)
    assert inspect_archive(archive)[0] == "zip"
    root = extract_archive(archive, tmp_path / "work" / "out")
    assert root == tmp_path / "work" / "out"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == set(files)
    for name, data in files.items():
        assert (root / name).read_bytes() == data
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "images").stat().st_mode) == 0o755
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_valid_tar_with_one_top_level_folder(tmp_path: Path, mode: str) -> None:
    members = [tar_member(".", kind=tarfile.DIRTYPE), tar_member("./team-a", kind=tarfile.DIRTYPE, mode=0o777)]
    members += [(info, data) for info, data in valid_tar_members("./team-a/")]
    for info, _ in members:
        info.mtime, info.uid, info.uname = 0, 0, "root"
    archive = write_tar(tmp_path / "upload.zip", members, mode)  # the name says zip; the content decides
    kind, listed = inspect_archive(archive)
    assert kind == "tar" and Member("team-a/images/a_0.png", len(png_bytes()), False) in listed
    root = extract_archive(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "team-a"
    assert (root / "images" / "a_0.png").read_bytes() == png_bytes()
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert (root / "submission.json").stat().st_mtime > 10**9  # not the archive's mtime 0


def test_macos_and_windows_junk_is_skipped_but_counted(tmp_path: Path) -> None:
    junk = {"__MACOSX/": b"", "__MACOSX/._submission.json": b"\x00\x05\x16\x07", ".DS_Store": b"\x00\x00\x00\x01Bud1",
            "images/Thumbs.db": b"\xd0\xcf", "images/._a_0.png": b"\x00\x05"}
    archive = write_zip(tmp_path / "upload.zip", {**submission_files(), **junk})
    assert {m.name for m in inspect_archive(archive)[1]} >= {"__MACOSX", ".DS_Store", "images/Thumbs.db"}
    refuse(archive, "has more than 6 members", ArchiveLimits(max_members=6))
    root = extract_archive(archive, tmp_path / "files")
    assert {p.relative_to(root).as_posix() for p in root.rglob("*")} == {*submission_files(), "images"}


# ---------------------------------------------------------------- receiving uploads


def test_receive_upload_returns_size_and_sha256(tmp_path: Path) -> None:
    chunks = [os.urandom(1000), b"", os.urandom(4096)]
    size, digest = receive_upload(iter(chunks), tmp_path / "uploads" / "upload", 10_000)
    assert (size, digest) == (5096, hashlib.sha256(b"".join(chunks)).hexdigest())
    assert (tmp_path / "uploads" / "upload").read_bytes() == b"".join(chunks)
    assert os.listdir(tmp_path / "uploads") == ["upload"]


def test_receive_upload_over_the_limit_removes_the_partial_file(tmp_path: Path) -> None:
    sent = []

    def chunks():
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1000

    with pytest.raises(UploadTooLarge, match="larger than the limit of 2500 bytes"):
        receive_upload(chunks(), tmp_path / "upload", 2500)
    assert len(sent) == 3  # stopped at once, not after reading everything
    assert os.listdir(tmp_path) == []


def test_receive_upload_async(tmp_path: Path) -> None:
    async def stream():
        for chunk in (b"abc", b"def", b""):
            yield chunk

    assert asyncio.run(receive_upload_async(stream(), tmp_path / "upload", 6)) == (6, hashlib.sha256(b"abcdef").hexdigest())
    with pytest.raises(UploadTooLarge):
        asyncio.run(receive_upload_async(stream(), tmp_path / "again", 5))
    assert os.listdir(tmp_path) == ["upload"]


def test_archive_over_the_upload_limit_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.zip", submission_files())
    refuse(archive, "the archive is \\d+ bytes; the limit is 100 bytes", ArchiveLimits(max_upload_bytes=100), UploadTooLarge)
