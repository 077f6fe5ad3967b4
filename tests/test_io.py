"""dpclab.io: atomic writes (content, mode, no leftovers, old file kept on failure), deterministic torch bytes,
sha256 and the inter-process lock."""

import hashlib
import json
import multiprocessing
import os
import stat
import time

import pytest
import torch

from dpclab.io import (atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text, file_lock,
                       sha256_file)


def test_atomic_writes_create_folders_and_leave_no_temporary_file(tmp_path):
    text = atomic_write_text(tmp_path / "a" / "b.txt", "héllo\n")
    raw = atomic_write_bytes(tmp_path / "c.bin", b"\x00\x01")
    js = atomic_write_json(tmp_path / "d.json", {"x": [1, 2]}, indent=1)
    assert text.read_bytes() == "héllo\n".encode("utf-8")
    assert raw.read_bytes() == b"\x00\x01"
    assert json.loads(js.read_text()) == {"x": [1, 2]}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.txt", "c.bin", "d.json"]


def test_every_writer_gives_the_mode_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    written = [atomic_write_text(tmp_path / "t", "x"), atomic_torch_save({"a": 1}, tmp_path / "p.pt")]
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [expected, expected]


def test_torch_save_bytes_depend_on_the_object_only(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 3}
    a = atomic_torch_save(state, tmp_path / "one.pt")
    b = atomic_torch_save(state, tmp_path / "other" / "two.pt")
    assert a.read_bytes() == b.read_bytes()
    assert sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    loaded = torch.load(b, weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["step"] == 3


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "f.txt", "old")

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _hold(path, seconds, started):
    with file_lock(path):
        started.set()
        time.sleep(seconds)


def test_file_lock_excludes_another_process(tmp_path):
    lock = tmp_path / "sub" / ".x.lock"
    started = multiprocessing.Event()
    other = multiprocessing.Process(target=_hold, args=(lock, 0.5, started))
    other.start()
    assert started.wait(30)
    t0 = time.monotonic()
    with file_lock(lock):
        waited = time.monotonic() - t0
    other.join()
    assert waited > 0.2
