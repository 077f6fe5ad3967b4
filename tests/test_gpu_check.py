"""``python -m dpclab gpu-check`` end to end on a tiny random model and a few classes (the GPU's command, on a CPU with
``--allow-cpu``): every method x precision row, a refused precision said so, the CoOp ratios, the estimate against a
measured run, PromptKD with a separate teacher model; refused without CUDA; the table written phase by phase (a failed
phase recorded, the next one run; the budget enforced); the float16 gradient scaler's code path on a CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dpclab.lab import gpu_check


def test_gpu_check_writes_its_table_end_to_end(tmp_path, tiny_model_name, monkeypatch, capsys):
    import dpclab.backbones

    real = dpclab.backbones.check_precision

    def refuse_fp16(precision, device):
        if precision == "fp16":
            raise ValueError("precision='fp16' is not supported on device cpu (test). Use precision='fp32' or 'amp'.")
        return real(precision, device)

    monkeypatch.setattr(dpclab.backbones, "check_precision", refuse_fp16)
    out = tmp_path / "gpu_check.md"
    code = gpu_check.main(["--allow-cpu", "--model", tiny_model_name, "--device", "cpu", "--classes", "3", "--shots",
                           "2", "--steps", "1", "--repeats", "1", "--methods", "zeroshot", "coop", "maple",
                           "--check-methods", "zeroshot", "coop", "--check-test", "12", "--image-px", "40",
                           "--teacher-model", tiny_model_name, "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert "| method | fp32 | fp16 | amp |" in text and "CPU" in text
    assert "Start-up: device: CPU" in text and "precision: fp32" in text
    teacher = text.split("### PromptKD with a ViT-L/14-shaped teacher")[1]
    row = next(line for line in teacher.splitlines() if line.startswith(f"| {tiny_model_name} |"))
    assert float(row.split(" | ")[2]) > 0  # ms per step of the student with its teacher
    table = text.split("### CoOp")[0]  # the method x precision table (the estimate's table has rows per run too)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in table.splitlines()
            if line.startswith(("| coop |", "| maple |", "| zeroshot |"))}
    for m in ("coop", "maple"):
        fp32, fp16, amp = (c.strip(" |") for c in rows[m])
        step, evaluation, peak = (float(x.replace(",", "")) for x in fp32.split(" / "))
        assert step > 0 and evaluation > 0 and peak > 0
        assert fp16.startswith("refused: precision='fp16' is not supported") and len(amp.split(" / ")) == 3
    assert rows["zeroshot"][0].strip().startswith("— /")  # nothing to fit
    assert "**epoch speed-up, fresh view**" in text and "measured / projected = " in text
    ratio = next(line for line in text.splitlines() if line.startswith("| ") and "x** |" in line)
    assert float(ratio.split("**")[1].rstrip("x")) > 0
    assert f"wrote {out}" in capsys.readouterr().out


def test_a_failed_fit_is_reported_and_the_rest_go_on(tmp_path, tiny_model_name, monkeypatch):
    real = gpu_check.measure_method  # patched where gpu_check looks it up

    def oom_for_maple(bb, name, *a, **kw):
        if name == "maple":
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(bb, name, *a, **kw)

    monkeypatch.setattr(gpu_check, "measure_method", oom_for_maple)
    cfg = gpu_check.CheckConfig(model=tiny_model_name, device="cpu", classes=3, precisions=("fp32",), steps=1,
                                repeats=1, image_px=40)
    fits = gpu_check.fits_in("fp32", ["maple", "coop"], cfg, tmp_path, log=lambda *_: None)
    assert fits[0].error.startswith("failed: CUDA out of memory") and fits[1].step_s > 0
    assert "failed: CUDA out of memory" in gpu_check._cell(fits[0])


def test_gpu_check_refuses_to_run_without_cuda(tmp_path, capsys):
    from dpclab.lab.cli import main

    out = tmp_path / "gpu_check.md"
    assert not torch.cuda.is_available()  # this CI machine: the check must not silently time the CPU
    for device in ("auto", "cpu", "cuda"):
        with pytest.raises(ValueError, match=r"needs a CUDA GPU and torch sees none.*nvidia-smi.*torch wheel.*"
                                             r"--allow-cpu"):
            gpu_check.main(["--device", device, "--out", str(out)])
    assert main(["gpu-check", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: gpu-check needs a CUDA GPU") and len(err.splitlines()) == 1
    assert not out.exists()


def _small(tiny_model_name, **kw) -> gpu_check.CheckConfig:
    small = dict(model=tiny_model_name, device="cpu", classes=3, precisions=("fp32",), methods=("zeroshot", "coop"),
                 steps=1, repeats=1, shots=2, image_px=40, check_methods=("zeroshot",), check_test=12,
                 teacher_model=tiny_model_name)
    return gpu_check.CheckConfig(**{**small, **kw})


def test_a_failed_phase_keeps_the_rows_written_before_it_and_the_next_phase_runs(tmp_path, tiny_model_name,
                                                                                  monkeypatch):
    out = tmp_path / "gpu_check.md"
    on_disk = []

    def broken_ratios(*a, **kw):
        on_disk.append(out.read_text())  # what the file holds when phase 2 fails
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "coop_ratios", broken_ratios)
    result = gpu_check.run_check(_small(tiny_model_name), tmp_path / "work", log=lambda *_: None, out=out,
                                 startup=["device: CPU (test)"])
    (before,) = on_disk
    assert "| coop | " in before and "| zeroshot | " in before  # phase 1's rows were on disk before phase 2 ran
    text = out.read_text()
    phase1 = text.split("### CoOp against")[0]
    coop = next(line for line in phase1.splitlines() if line.startswith("| coop | "))
    assert float(coop.split(" | ")[1].split(" / ")[0]) > 0
    assert "**failed: RuntimeError: CUDA error: an illegal memory access was encountered**" in text
    assert result.problems == {gpu_check.PHASES[1]: "failed: RuntimeError: CUDA error: an illegal memory access "
                                                    "was encountered"}
    assert "measured / projected = " in text and result.check is not None  # phase 3 ran after the failure
    assert result.teacher["step_s"] > 0  # and phase 4


def test_the_budget_is_enforced_and_what_is_left_is_said_to_be_skipped(tmp_path, tiny_model_name, monkeypatch):
    import time

    real = gpu_check.fits_in

    def slow_fits(*a, **kw):  # the first precision's fits outlast the budget
        out = real(*a, **kw)
        time.sleep(0.5)
        return out

    monkeypatch.setattr(gpu_check, "fits_in", slow_fits)
    out = tmp_path / "gpu_check.md"
    cfg = _small(tiny_model_name, budget_s=0.3, precisions=("fp32", "amp"))
    result = gpu_check.run_check(cfg, tmp_path / "work", log=lambda *_: None, out=out)
    text = out.read_text()
    fp32 = [f for f in result.fits if f.precision == "fp32"]
    amp = [f for f in result.fits if f.precision == "amp"]
    assert all(not f.error for f in fp32) and fp32[1].step_s > 0  # ran within the budget
    assert len(amp) == 2 and all(f.error.startswith("skipped: the 0.005-minute budget ran out") for f in amp)
    assert set(result.problems) == set(gpu_check.PHASES[1:]) and not result.ratios and result.check is None
    assert text.count("**skipped: the 0.005-minute budget ran out") == 3
    assert "| coop | " in text and "| skipped: the 0.005-minute budget ran out" in text


def test_float16_gradient_scaler_path_on_a_cpu(json_root, tmp_path, tiny_backbone, monkeypatch):
    """``amp`` with float16 autocast (CUDA's) runs its gradient scaler: forced on a CPU (torch's CPU autocast and
    GradScaler take float16), a fit scales the loss, skips the steps whose gradients overflow (the scale halves, the
    prompt does not move), keeps the scaler's state in its checkpoint and restores it on resume: bit-identical."""
    import dpclab.precision as precision
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig
    from dpclab.methods import resolve
    from dpclab.train import TrainConfig, fit

    monkeypatch.setattr(precision, "amp_dtype", lambda device: torch.float16)  # what CUDA gets
    cpu = torch.device("cpu")
    scaler = precision.grad_scaler("amp", cpu)
    assert scaler.is_enabled() and scaler.get_scale() == 65536.0
    assert not precision.grad_scaler("fp16", cpu).is_enabled()  # fp16 (the reference's) has no scaler

    cfg = RunConfig.of(method="coop", dataset="eurosat", data_root=str(json_root), shots=4, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), results=None, progress=False)
    exp = Experiment.prepare(cfg, tiny_backbone)
    data, task = exp.train_examples("features"), exp.train_task
    tcfg = TrainConfig(epochs=3, batch_size=4, lr=0.05, seed=1, progress=False)

    # an overflowing gradient: the step is skipped and the scale halves
    method = resolve("coop").build(tiny_backbone)
    before = method.ctx.detach().clone()
    opt = torch.optim.SGD([method.ctx], lr=0.1)
    with precision.autocast("amp", cpu):
        loss = method.loss(data.features(0)[:4], data.labels[:4], task)
    method.step(dataclasses.replace(loss, total=loss.total * float("inf")), opt, scaler)
    assert torch.equal(method.ctx, before) and scaler.get_scale() == 32768.0

    whole = resolve("coop").build(tiny_backbone)
    full = fit(whole, data, task, tcfg, precision="amp")
    assert not torch.equal(whole.ctx, before)  # it trained (the scale fell until steps went through)
    cut = resolve("coop").build(tiny_backbone)
    fit(cut, data, task, tcfg, tmp_path / "rd", stop_after=1, precision="amp")
    saved = torch.load(tmp_path / "rd" / "checkpoint.pt", weights_only=True)
    assert "scaler" in saved and saved["scaler"]["scale"] < 65536.0
    resumed = resolve("coop").build(tiny_backbone)
    hist = fit(resumed, data, task, tcfg, tmp_path / "rd", precision="amp")
    assert [h["loss"] for h in hist] == [h["loss"] for h in full] and torch.equal(resumed.ctx, whole.ctx)


@pytest.mark.parametrize("seconds,expected", [(None, "—"), (0.0, "—"), (0.0123, "12.3")])
def test_milliseconds_cell(seconds, expected):
    assert gpu_check._ms(seconds) == expected
