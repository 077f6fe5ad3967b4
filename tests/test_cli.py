"""CLI commands that wrap the world writer and the pretraining script."""

from __future__ import annotations

import json

import pytest

from dpclab.cli import main


def test_world_command_writes_coop_layout(tmp_path, capsys):
    assert main(["world", "--root", str(tmp_path), "--names", "world_tint"]) == 0
    split = next((tmp_path / "world_tint").glob("split_zhou_*.json"))
    data = json.loads(split.read_text())
    assert set(data) >= {"train", "val", "test"} and data["train"]
    assert "world_tint" in capsys.readouterr().out


def test_world_command_stamps_what_it_writes(tmp_path):
    from dpclab.data.world import STAMP_FILE, ensure_world, world_stamp

    assert main(["world", "--root", str(tmp_path), "--names", "world_tint"]) == 0
    stamp = tmp_path / "world_tint" / STAMP_FILE
    assert stamp.read_text().strip() == world_stamp(0)
    assert ensure_world(tmp_path, ["world_tint"]) == []  # accepted as current: nothing rewritten
    stamp.write_text("seed0-000000000000\n")  # as if an older generator had written it
    with pytest.raises(RuntimeError, match="another version of the world generator"):
        ensure_world(tmp_path, ["world_tint"])


def test_pretrain_command_uses_the_pretraining_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--help"])
    assert exc.value.code == 0 and "--steps" in capsys.readouterr().out
