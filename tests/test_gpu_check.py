"""``python -m dpclab gpu-check`` end to end on a tiny random model and a few classes (the GPU's command, on a CPU):
every method x precision row, a refused precision said so, the CoOp ratios, the estimate against a measured run."""

from __future__ import annotations

import pytest

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
    code = gpu_check.main(["--model", tiny_model_name, "--device", "cpu", "--classes", "3", "--shots", "2",
                           "--steps", "1", "--repeats", "1", "--methods", "zeroshot", "coop", "maple",
                           "--check-methods", "zeroshot", "coop", "--check-test", "12", "--image-px", "40",
                           "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert "| method | fp32 | fp16 | amp |" in text and "CPU" in text
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
    import dpclab.lab.estimate.measuring as measure

    real = measure.measure_method

    def oom_for_maple(bb, name, *a, **kw):
        if name == "maple":
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(bb, name, *a, **kw)

    monkeypatch.setattr(measure, "measure_method", oom_for_maple)
    cfg = gpu_check.CheckConfig(model=tiny_model_name, device="cpu", classes=3, precisions=("fp32",), steps=1,
                                repeats=1, image_px=40)
    fits = gpu_check.fits_in("fp32", ["maple", "coop"], cfg, tmp_path, log=lambda *_: None)
    assert fits[0].error.startswith("failed: CUDA out of memory") and fits[1].step_s > 0
    assert "failed: CUDA out of memory" in gpu_check._cell(fits[0])


@pytest.mark.parametrize("seconds,expected", [(None, "—"), (0.0, "—"), (0.0123, "12.3")])
def test_milliseconds_cell(seconds, expected):
    assert gpu_check._ms(seconds) == expected
