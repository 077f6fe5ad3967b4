"""Stale state: feature caches and run directories are keyed by the images they read (path, label, file size and
mtime_ns), so one image replaced in place invalidates exactly what read it; results tables written before the
``train_classes`` column still load. (A stale embedded world is regenerated: tests/test_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import write_image
from dpclab.data.features import items_digest
from dpclab.evaluate import append_result, read_results, summarize
from dpclab.pipeline import run
from dpclab.runconfig import RunConfig


def _cfg(root, tmp_path, seed: int) -> RunConfig:
    return RunConfig.of(method="coop", dataset="eurosat", data_root=str(root), shots=4, seed=seed, device="cpu",
                     cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                     results=str(tmp_path / "results.csv"), train={"epochs": 2, "batch_size": 4, "lr": 0.05},
                     progress=False)


def _files(folder: Path) -> dict[str, int]:
    """The cache entries under folder (an entry's lock file, made when it is first encoded, is not an entry)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")}


def _runs(root, tmp_path, backbone) -> dict:
    return {seed: run(_cfg(root, tmp_path, seed), backbone=backbone) for seed in (1, 2)}


def test_replacing_one_image_invalidates_exactly_what_read_it(json_root, tmp_path, tiny_backbone):
    features, fewshot = tmp_path / "cache" / "features", tmp_path / "cache" / "fewshot"
    first = _runs(json_root, tmp_path, tiny_backbone)
    feats0, fewshot0 = _files(features), _files(fewshot)
    train = {seed: {d.impath for d in r.experiment.train_split.train} for seed, r in first.items()}
    # a base-class training image that seed 1's few-shot sample holds and seed 2's does not
    image = Path(sorted(train[1] - train[2])[0])
    write_image(image, (250, 0, 250), seed=4242)

    second = _runs(json_root, tmp_path, tiny_backbone)
    assert second[2].reused and second[2].run_dir == first[2].run_dir and second[2].metrics == first[2].metrics
    assert not second[1].reused and second[1].run_dir != first[1].run_dir
    assert (first[1].run_dir / "result.json").is_file()  # the old run is kept, not reused
    feats1 = _files(features)
    assert {k: feats1[k] for k in feats0} == feats0  # no cached entry rewritten
    key = tiny_backbone.key
    digest = items_digest(second[1].experiment.train_split.train)
    assert sorted(set(feats1) - set(feats0)) == [f"{key}/train-v{v}-s1-{digest}.pt" for v in (0, 1)]
    # the few-shot split is a list of paths sampled from the split listing, which did not change: it is reused
    assert _files(fewshot) == fewshot0

    # a new-class test image: every run read it (all new runs); only the new-class test features are recomputed
    test_image = Path(first[1].experiment.new.test[0].impath)
    write_image(test_image, (0, 250, 0), seed=4343)
    third = _runs(json_root, tmp_path, tiny_backbone)
    assert all(not r.reused and r.run_dir not in (first[s].run_dir, second[s].run_dir) for s, r in third.items())
    feats2 = _files(features)
    assert {k: feats2[k] for k in feats1} == feats1
    assert sorted(set(feats2) - set(feats1)) == [f"{key}/test-v0-s0-{items_digest(third[1].experiment.new.test)}.pt"]
    assert _files(fewshot) == fewshot0


def test_same_path_new_file_stamp_changes_the_key(json_root):
    from dpclab.data.coop import load_dataset

    items = load_dataset(json_root, "eurosat").test[:3]
    before = items_digest(items)
    assert items_digest(list(items)) == before  # stable while the files are untouched
    write_image(Path(items[1].impath), (1, 2, 3), seed=7)
    assert items_digest(items) != before


def _old_row(seed: int, base: float, new: float) -> dict:
    return {"dataset": "eurosat", "method": "coop", "model": "ViT-B-16", "pretrained": "openai", "shots": 16,
            "seed": seed, "base": base, "new": new, "hm": 2 * base * new / (base + new), "epochs": 200,
            "run_dir": "", "backend": "open_clip", "time": "2026-01-01 00:00:00"}


def test_results_table_without_train_classes_loads_and_keeps_oracle_rows_apart(tmp_path):
    path = tmp_path / "results.csv"
    pd.DataFrame([_old_row(1, 80.0, 70.0), _old_row(2, 82.0, 72.0)]).to_csv(path, index=False)  # old format
    assert list(read_results(path).train_classes) == ["base", "base"]
    assert list(read_results(path).columns[:7]) == ["dataset", "method", "model", "pretrained", "shots",
                                                    "train_classes", "seed"]
    append_result(path, {**_old_row(1, 90.0, 88.0), "train_classes": "all"})  # an oracle run, recorded now
    table = read_results(path)
    assert list(table.train_classes) == ["base", "base", "all"] and list(table.seed) == [1, 2, 1]
    for source in (path, pd.read_csv(path)):  # a path, or a frame read by hand (NaN for the old rows)
        s = summarize(source)
        assert list(zip(s.train_classes, s.runs)) == [("base", 2), ("all", 1)]
        assert s.base.tolist() == pytest.approx([81.0, 90.0]) and s.new.tolist() == pytest.approx([71.0, 88.0])
