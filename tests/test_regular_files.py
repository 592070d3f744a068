"""utils.regular_file / open_regular: readers refuse FIFOs, devices and folders in one line, and never block."""

from __future__ import annotations

import os
import threading

import pytest

from fashiongen.utils import NotRegularFile, open_regular, regular_file


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "FIFO"),
    (lambda p: p.mkdir(), "folder"),
    (lambda p: None, "not found"),
])
def test_non_regular_paths_are_refused_naming_them(tmp_path, make, kind):
    path = tmp_path / "input.png"
    make(path)
    for reader in (regular_file, open_regular):
        with pytest.raises(NotRegularFile) as caught:
            reader(path)
        assert str(path) in str(caught.value) and kind in str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_device_is_refused():
    for reader in (regular_file, open_regular):
        with pytest.raises(NotRegularFile, match="character device"):
            reader("/dev/zero")


def test_opening_a_fifo_does_not_wait_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: outcome.append(pytest.raises(NotRegularFile, open_regular, fifo).value))
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive() and outcome


def test_regular_files_and_symlinks_to_them_open(tmp_path):
    target = tmp_path / "a.txt"
    target.write_bytes(b"hello")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with open_regular(link) as handle:
        assert handle.read() == b"hello"
    assert regular_file(link) == link


def test_an_image_path_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    from fashiongen.pipeline import PipelineInputError, load_image

    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: outcome.append(pytest.raises(PipelineInputError, load_image, fifo, "photo").value))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and outcome
    assert str(outcome[0]) == f"photo: {fifo}: a FIFO (named pipe), not a regular file"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["release.h5", "fashion-mnist.npz"])
def test_a_dataset_source_that_is_a_fifo_is_one_line_not_a_hang(tmp_path, name):
    import subprocess
    import sys

    fifo = tmp_path / name
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "fashiongen.data", "inspect", str(fifo)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {fifo}: a FIFO (named pipe), not a regular file"
