"""The cost estimate's arithmetic on fake timings (no measuring): per run, per notebook (03's ω grid and 05's
invariance study included), on N GPUs; the report plan it prices; the command's settings from report parameters;
and one real measurement on a tiny random model (seconds)."""

from __future__ import annotations

import pytest

from dpclab.data.shapes import COOP_SHAPES, DatasetShape
from dpclab.lab.estimate.measuring import measure
from dpclab.lab.estimate.model import Curve, DeviceTimings, MeasureConfig, MethodTimings
from dpclab.lab.estimate.price import project
from dpclab.lab.plan import PlannedRun

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
    assert p.loads == pytest.approx(7 * 2.0)
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


def test_a_method_whose_protocol_fixes_its_data_is_priced_on_it():
    """PromptKD's student trains on every training image of all classes (``METHODS["promptkd"].data``)."""
    from dpclab.methods import METHODS

    if "promptkd" not in METHODS:
        pytest.skip("no PromptKD on this branch")
    shape = DatasetShape("toy", classes=10, test=100, train=400)
    t = fake_timings()
    t.methods["promptkd"] = MethodTimings("pixels", Curve.constant(0.2), Curve.constant(0.3), Curve.constant(0.0), 8)
    (run,) = project([PlannedRun("06", "toy", "promptkd", 1)], {"toy": shape}, t, epochs=1).runs
    assert run.train == pytest.approx(400 // 8 * 0.2 + 400 * 0.02)  # 50 steps; decoding 400 images in-process


def test_curve_interpolates_extrapolates_up_and_clamps_below():
    c = Curve((5.0, 50.0, 500.0), (1.0, 2.0, 11.0))
    assert c(5) == 1.0 and c(27.5) == pytest.approx(1.5) and c(275) == pytest.approx(6.5)
    assert c(1000) == pytest.approx(21.0)
    assert c(0) == 1.0 and c(2) == 1.0  # no slope extrapolated below the smallest measured class count
    assert Curve((5.0, 50.0), (9.0, 1.0))(500) == 1.0  # never below the smallest measured time
    assert Curve((5.0, 50.0), (9.0, 1.0))(1) == 9.0


def test_wall_time_on_gpus_runs_the_grids_jobs_then_the_report():
    from dpclab.lab.estimate.cli import build_parser, settings
    from dpclab.lab.estimate.cli import grid_jobs

    plan = [PlannedRun("00", "toy", "zeroshot", 1), PlannedRun("06", "toy", "coop", 1),
            PlannedRun("06", "toy", "coop", 2), PlannedRun("06", "toy", "coop+dpc", 1)]
    t = fake_timings()
    t.methods["zeroshot"] = MethodTimings("features", Curve.constant(0.0), Curve.constant(0.5), Curve.constant(0.0))
    p = project(plan, {"toy": TOY}, t, epochs=3)
    jobs, job_key = grid_jobs(plan, settings(build_parser().parse_args(["--epochs", "3"])))
    assert len(jobs) == 3 and len(job_key) == 4  # zero-shot: nothing for the grid to train
    one = p.wall(1, jobs, job_key)
    assert one.total == pytest.approx(p.total) and one.waves == (2, 1)  # DPC's step 2 needs coop seed 1
    coop1, coop2, dpc = (p.jobs()[r.key] for r in plan[1:])
    four = p.wall(4, jobs, job_key)
    assert four.grid == pytest.approx(max(coop1 + dpc, coop2))  # step 2 starts when its step 1 has finished
    assert four.report == pytest.approx(p.total - coop1 - coop2 - dpc)  # zero-shot, notebook work, loads
    assert four.total < one.total
    with pytest.raises(ValueError, match="gpus"):
        p.wall(0, jobs, job_key)


def test_notebooks_03_and_05_are_priced_on_the_dpc_run_they_reuse():
    plan = the_plan("--datasets", "eurosat", "--seeds", "1")
    t = fake_timings()
    for m in {r.method for r in plan} - set(t.methods):
        t.methods[m] = MethodTimings("features", Curve.constant(0.01), Curve.constant(0.5), Curve.constant(0.0), 32)
    p = project(plan, {"eurosat": COOP_SHAPES["eurosat"]}, t, epochs=2)
    # 03 also requests its DPC side-by-side runs; its own work (the ω grid) is priced once, on the DPC run it studies
    by_nb = {nb: [r for r in p.runs if r.run.notebook == nb and r.notebook_work > 0] for nb in ("03", "05")}
    for nb, runs in by_nb.items():
        (run,) = runs
        assert run.reused and run.trained == 0 and run.run.method == "coop+dpc" and not run.run.method_cfg
    shape = COOP_SHAPES["eurosat"]
    # 03: 21 ω x (base and new test sets: 16 + 16 batches of 256, validation: 1 batch) at a fixed 0.5 s a batch;
    # 05: 11 ω x the test sets + 33 encodings of the base and new prompts (0.5 s each)
    assert shape.test_base == 4050 and shape.test_new == 4050 and shape.val_images(16) == 20
    assert by_nb["03"][0].notebook_work == pytest.approx(21 * 33 * 0.5)
    assert by_nb["05"][0].notebook_work == pytest.approx(11 * 32 * 0.5 + 33 * 2 * 0.5)
    quick = project(plan, {"eurosat": shape}, t, epochs=2, quick=True)
    assert max(r.notebook_work for r in quick.runs if r.run.notebook == "03") == pytest.approx(11 * 33 * 0.5)
    assert sum(1 for r in p.runs if not r.reused) == len({r.key for r in plan})  # every run priced once


def the_plan(*args: str) -> list:
    """The report's plan as the estimate reads it (``dpclab.lab.plan``), for ``estimate`` arguments ``args``."""
    from dpclab.lab.estimate.cli import build_parser, settings
    from dpclab.lab.estimate.cli import report_runs

    return report_runs(settings(build_parser().parse_args(list(args))))


def test_the_estimate_prices_every_notebooks_runs_once():
    plan = the_plan("--datasets", "eurosat", "dtd")
    assert len({r.key for r in plan}) == len(plan)
    nbs = {nb for r in plan for nb in getattr(r, "requested_by", (r.notebook,))}
    assert {"00", "01", "02", "04", "06"} <= nbs
    assert any(r.train_classes == "all" for r in plan)  # notebook 04's oracle
    # the second dataset is 06's and, as the other dataset of DPC's side-by-side, 02's and 03's (plan.Scope.side_by_side)
    dtd = [r for r in plan if r.dataset == "dtd"]
    assert dtd and all(set(getattr(r, "requested_by", (r.notebook,))) <= {"02", "03", "06"} for r in dtd)
    assert {r.method for r in dtd if "06" not in r.requested_by} <= {"coop", "coop+dpc"}


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


def test_measure_in_another_precision_names_it(tiny_model_name, tmp_path):
    cfg = MeasureConfig(model=tiny_model_name, device="cpu", precision="amp", class_counts=(3,), steps=1, repeats=1,
                        eval_sizes=(2, 4), eval_sizes_features=(2, 8), image_px=48, encode_images=4)
    t = measure(["coop"], cfg, tmp_path, log=lambda *_: None)
    assert t.precision == "amp" and t.device_name.startswith("CPU") and t.methods["coop"].peak_mib > 0


def test_settings_are_the_reports_parameters():
    from dpclab.lab.estimate.cli import build_parser, settings

    s = settings(build_parser().parse_args(["-p", "precision", "fp16", "-p", "dataset", "eurosat dtd", "-p", "seeds",
                                            "1 2", "-p", "epochs", "None", "-p", "model", "ViT-B-32"]))
    assert (s.source.precision, s.datasets, s.seeds, s.scope.epochs, s.source.model) == (
        "fp16", ("eurosat", "dtd"), (1, 2), None, "ViT-B-32")
    assert s.weights is None and s.source.pretrained == "random"  # measured with random weights: no download
    s = settings(build_parser().parse_args(["--precision", "amp", "--epochs", "2", "--quick"]))
    assert s.source.precision == "amp" and s.scope.epochs == 2 and s.scope.quick and len(s.datasets) == 11
    assert s.source.model == "ViT-B-16" and s.seeds == (1,)  # quick: the first seed, as report --quick
    s = settings(build_parser().parse_args(["--model", "small"]))
    assert s.source.embedded and s.weights == "embedded"
    with pytest.raises(ValueError, match="no shape known"):
        settings(build_parser().parse_args(["--datasets", "mnist"]))


def test_cli_projects_saved_timings_without_measuring(tmp_path, capsys):
    from dpclab.lab.estimate import cli as estimate

    plan = the_plan("--datasets", "eurosat", "dtd")
    c = Curve.constant
    t = DeviceTimings("fake", "fake", 1.0, 0.001, 0.002, 0.001, 0,
                      {r.method: MethodTimings("features", c(0.01), c(0.05), c(0.0), 32) for r in plan},
                      precision="fp16", device_name="Fake GPU 80GB")
    (tmp_path / "t.json").write_text(t.to_json())
    md = tmp_path / "estimate.md"
    assert estimate.main(["--timings", str(tmp_path / "t.json"), "--datasets", "eurosat", "dtd", "--markdown",
                          str(md), "--gpus", "4", "-p", "precision", "fp16"]) == 0
    p = project(plan, {d: COOP_SHAPES[d] for d in ("eurosat", "dtd")}, t)
    s = estimate.settings(estimate.build_parser().parse_args(["--datasets", "eurosat", "dtd", "-p", "precision",
                                                              "fp16"]))
    text = md.read_text()
    wall = p.wall(4, *estimate.grid_jobs(plan, s))
    assert f"**{estimate.hours(p.total)}**" in text and f"**{estimate.hours(wall.total)}**" in text
    assert "on 4 GPUs" in text and "Fake GPU 80GB" in text and "precision **fp16**" in text
    for nb in ("00", "01", "02", "03", "04", "05", "06"):
        assert f"| {nb} |" in text
    assert "ω grid of 21 values" in text and "invariance study" in text
    assert "plan: " in capsys.readouterr().out
    with pytest.raises(SystemExit, match="measured in fp16, the report asks for amp"):
        estimate.main(["--timings", str(tmp_path / "t.json"), "--datasets", "eurosat", "--precision", "amp"])
