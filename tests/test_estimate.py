"""The cost estimate's arithmetic on fake timings (no measuring), the report plan it prices, and one real
measurement on a tiny random model (seconds)."""

from __future__ import annotations

import pytest

from dpclab.data.shapes import COOP_SHAPES, DatasetShape
from dpclab.estimate import Curve, DeviceTimings, MethodTimings, MeasureConfig, measure, project
from dpclab.plan import PlannedRun, report_plan, waves

TOY = DatasetShape("toy", classes=10, test=100)  # 5 base + 5 new classes, 50 + 50 test images


def fake_timings(workers: int = 0) -> DeviceTimings:
    c = Curve.constant
    return DeviceTimings("fake", "fake", load=2.0, encode=0.01, decode_train=0.02, decode_test=0.01, workers=workers,
                         methods={"coop": MethodTimings("features", c(0.1), c(0.5), c(0.0), 32),
                                  "coop+dpc": MethodTimings("features", c(0.05), c(0.5), c(0.0), 4),
                                  "maple": MethodTimings("pixels", c(0.2), c(0.3), c(0.001), 4)})


def test_projection_arithmetic():
    plan = [PlannedRun("06", "toy", "coop", 1), PlannedRun("06", "toy", "maple", 1),
            PlannedRun("01", "toy", "coop", 2, curve=True)]
    p = project(plan, {"toy": TOY}, fake_timings(), shots=16, epochs=3)
    coop1, maple1, coop2 = p.runs
    # coop: 80 images / batch 32 = 2 steps x 0.1 s x 3 epochs; 3 views x 80 x (decode 0.02 + encode 0.01);
    # test features 100 x (0.01 + 0.01); evaluation one batch each of base and new at 0.5 s
    assert (coop1.train, coop1.views, coop1.test_features, coop1.eval) == pytest.approx((0.6, 7.2, 2.0, 1.0))
    # maple: 20 steps x 0.2 s + decoding 80 images x 0.02 s in the main process, x 3 epochs; evaluation
    # 2 x (0.3 + 50 x 0.001 + decoding 50 x 0.01)
    assert (maple1.train, maple1.views, maple1.test_features, maple1.eval) == pytest.approx((16.8, 0, 0, 1.7))
    # another seed: its own views, the dataset's test features are cached; a curve evaluates after each epoch
    assert (coop2.train, coop2.views, coop2.test_features, coop2.eval) == pytest.approx((0.6, 7.2, 0.0, 4.0))
    assert p.notebooks_overhead == pytest.approx(7 * 2.0)
    assert p.total == pytest.approx(10.8 + 18.5 + 11.8 + 14.0)
    assert p.by(lambda r: r.method) == pytest.approx({"coop": 22.6, "maple": 18.5})
    # workers decode while the model runs: maple's epoch costs max(compute 4.0, decode 1.6 / 4)
    p4 = project(plan, {"toy": TOY}, fake_timings(workers=4), shots=16, epochs=3)
    assert p4.runs[1].train == pytest.approx(12.0)


def test_two_step_plugin_pays_for_its_missing_step_one():
    p = project([PlannedRun("06", "toy", "coop+dpc", 1)], {"toy": TOY}, fake_timings(), epochs=3)
    assert [r.run.method for r in p.runs] == ["coop", "coop+dpc"]
    step1, step2 = p.runs
    assert step1.views == pytest.approx(7.2) and step2.views == 0  # step 2 reuses step 1's cached views
    assert step2.train == pytest.approx(3 * 20 * 0.05)


def test_curve_interpolates_and_extrapolates_in_class_count():
    c = Curve((5.0, 50.0, 500.0), (1.0, 2.0, 11.0))
    assert c(5) == 1.0 and c(27.5) == pytest.approx(1.5) and c(275) == pytest.approx(6.5)
    assert c(1000) == pytest.approx(21.0) and c(0) == pytest.approx(1.0 - 5 / 45)
    assert Curve((5.0, 50.0), (9.0, 1.0))(500) == 0.0  # never below zero


def test_report_plan_lists_each_run_once_with_its_curve():
    plan = report_plan({"dataset": "eurosat,dtd", "seeds": [1, 2, 3]})
    keys = [r.key for r in plan]
    assert len(keys) == len(set(keys))
    coop1 = next(r for r in plan if (r.dataset, r.method, r.seed, r.method_cfg, r.train) == ("eurosat", "coop", 1, (), ()))
    assert coop1.curve and coop1.notebook == "01"
    assert any(r.train_classes == "all" for r in plan)  # notebook 04's oracle
    assert sum(1 for r in plan if "02" in r.requested_by and r.method_cfg) == 4  # notebook 02's ablations
    dtd = [r for r in plan if r.dataset == "dtd"]
    assert all(r.notebook == "06" for r in dtd) and len(dtd) == 3 * len({r.label for r in dtd})
    first, second = waves(plan)
    assert all("+dpc" in r.method for r in second) and not any("+dpc" in r.method for r in first)
    assert not any(r.method == "zeroshot" for r in first)


def test_shapes_follow_the_base_to_new_protocol():
    assert COOP_SHAPES["imagenet"].base_classes == 500 and COOP_SHAPES["sun397"].base_classes == 199
    assert COOP_SHAPES["eurosat"].train_images(16) == 80
    assert all(s.test_base + s.test_new == s.test for s in COOP_SHAPES.values())


def test_measure_times_real_steps_on_a_tiny_model(tiny_model_name, tmp_path):
    cfg = MeasureConfig(model=tiny_model_name, device="cpu", class_counts=(3,), steps=1, repeats=1,
                        eval_sizes=(2, 4), eval_sizes_features=(2, 8), image_px=48, encode_images=4)
    t = measure(["zeroshot", "coop", "maple"], cfg, tmp_path, log=lambda *_: None)
    assert t.encode > 0 and t.decode_train > 0 and t.load > 0
    assert t.methods["coop"].kind == "features" and t.methods["maple"].kind == "pixels"
    assert t.methods["coop"].batch_size == 32 and t.methods["maple"].batch_size == 4
    assert t.methods["maple"].step(3) > 0 and t.methods["zeroshot"].step(3) == 0
    again = DeviceTimings.from_json(t.to_json())
    assert again == t
    p = project([PlannedRun("06", "eurosat", "coop", 1)], {"eurosat": COOP_SHAPES["eurosat"]}, t, epochs=1)
    assert p.total > 0


def test_cli_projects_saved_timings_without_measuring(tmp_path, capsys):
    from dpclab import estimate

    plan = report_plan({"dataset": "eurosat,dtd", "seeds": [1, 2, 3]})
    c = Curve.constant
    t = DeviceTimings("fake", "fake", 1.0, 0.001, 0.002, 0.001, 0,
                      {r.method: MethodTimings("features", c(0.01), c(0.05), c(0.0), 32) for r in plan})
    (tmp_path / "t.json").write_text(t.to_json())
    md = tmp_path / "estimate.md"
    assert estimate.main(["--timings", str(tmp_path / "t.json"), "--datasets", "eurosat", "dtd", "--markdown",
                          str(md)]) == 0
    total = project(plan, {d: COOP_SHAPES[d] for d in ("eurosat", "dtd")}, t).total
    assert f"**{estimate.hours(total)}**" in md.read_text() and "| 06 |" in md.read_text()
    assert "plan: " in capsys.readouterr().out
