"""dpclab anywhere: the wheel carries everything the main job reads, and runs it from an empty folder.

The wheel and sdist are built with ``python -m build`` (the wheel from the sdist, as ``build`` does) from a copy of
the repository's build inputs, installed with ``pip --no-deps`` into a fresh virtual environment outside the
repository whose only other packages are this interpreter's (a ``.pth`` line to its site-packages, so torch is not
installed again; the editable install's hook there is not run, and the repository is not on ``sys.path``). From
empty temporary folders: ``train`` writes the world it needs and trains, ``report --quick --only 00 03`` runs the
packaged notebooks with papermill and writes index.html and the figures there; without dpclab, a notebook's first
output names the command that installs it. A fresh clone's ``train`` writes the world by itself too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

import dpclab
from dpclab import resources

ROOT = Path(__file__).resolve().parent.parent
#: what building reads (pyproject.toml, setup.py, MANIFEST.in and the files they name)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CHANGELOG.md", "dpclab", "notebooks",
                "data/embedded")
#: the install hint every notebook's first code cell after the parameters raises when dpclab is missing
INSTALL = '%pip install "dpclab @ git+https://github.com/<owner>/dpclab"'
TIMES: dict[str, float] = {}


def _env() -> dict:
    """This environment without anything that points at the repository or its files. JUPYTER_PATH: the data files
    (nbconvert's templates) that pip would have installed into the venv's share/jupyter with the dependencies."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP") and not k.startswith("DPCLAB_")}
    return {**env, "PYTHONNOUSERSITE": "1", "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}


def _run(cmd: list, cwd: Path, timeout: float = 300, clean: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd``; ``clean``: in :func:`_env` (else in this environment: building needs this python's packages)."""
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env() if clean else None, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} exited {res.returncode}:\n{res.stdout[-3000:]}\n" \
                                f"{res.stderr[-3000:]}"
    return res


def _venv(path: Path) -> Path:
    """A fresh virtual environment that sees this interpreter's packages (one .pth line: torch, pip, setuptools...)
    but no dpclab (the .pth files there, the editable install's hook among them, are not run); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True, env=_env()).stdout.strip())
    outer = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "outer-packages.pth").write_text("\n".join(outer) + "\n")
    return python


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """The sdist and the wheel ``python -m build`` makes from it, built from a copy of the build inputs."""
    pytest.importorskip("build", reason="tests/test_wheel.py builds with `python -m build`: pip install build "
                                        "(it is in the dev extra)")
    base = tmp_path_factory.mktemp("wheel")
    src, out = base / "src", base / "dist"
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=base, clean=False)
    TIMES["build sdist + wheel"] = time.perf_counter() - t0
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "src": src, "base": base}


@pytest.fixture(scope="module")
def installed(dist) -> Path:
    """The python of a fresh venv outside the repository with only the wheel installed (``--no-deps``: the
    dependencies are this interpreter's)."""
    python = _venv(dist["base"] / "venv")
    t0 = time.perf_counter()
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", dist["wheel"]], cwd=dist["base"])
    TIMES["pip install --no-deps"] = time.perf_counter() - t0
    return python


def test_the_wheel_carries_the_checkpoint_manifest_and_notebooks(dist):
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    shipped = sorted(n for n in names if n.startswith(f"dpclab/{resources.SHIPPED}/"))
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert shipped == sorted([f"dpclab/{resources.SHIPPED}/data/embedded/MANIFEST.json",
                              f"dpclab/{resources.SHIPPED}/data/embedded/dpclab-tiny.pt"]
                             + [f"dpclab/{resources.SHIPPED}/notebooks/{n}" for n in notebooks])
    wheel = zipfile.ZipFile(dist["wheel"])
    for name in shipped:  # byte for byte the committed copies
        assert wheel.read(name) == (ROOT / name.split(f"{resources.SHIPPED}/", 1)[1]).read_bytes(), name
    assert "dpclab/lab/report/typical_times.json" in names and "dpclab/model_configs/dpclab-tiny.json" in names
    assert f"dpclab-{dpclab.__version__}-" in dist["wheel"].name
    # the sdist carries the top-level files once (no dpclab/_shipped copy: setup.py makes it at build time)
    import tarfile

    members = tarfile.open(dist["sdist"]).getnames()
    assert not [m for m in members if f"/{resources.SHIPPED}/" in m]
    assert any(m.endswith("/data/embedded/dpclab-tiny.pt") for m in members)
    print(f"wheel {dist['wheel'].name}: {dist['wheel'].stat().st_size / 1e6:.1f} MB; sdist "
          f"{dist['sdist'].stat().st_size / 1e6:.1f} MB; built in {TIMES['build sdist + wheel']:.1f} s")


def test_the_sdist_and_the_tree_build_the_same_wheel(dist):
    """``pip wheel .`` / ``pip install <repository>`` build from the tree: the same files as the sdist's wheel."""
    out = dist["base"] / "direct"
    _run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", out, dist["src"]], cwd=dist["base"],
         clean=False)

    def record(path: Path) -> list[str]:
        z = zipfile.ZipFile(path)
        rec = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        return sorted(line for line in z.read(rec).decode().splitlines() if ".dist-info/" not in line)

    assert record(next(out.glob("*.whl"))) == record(dist["wheel"])


def test_an_editable_install_reads_the_clones_own_files(dist):
    """The README's ``pip install -e .``: setup.py copies nothing (no dpclab/_shipped in the tree); the checkpoint
    and the notebooks are read at the clone's top level."""
    python = _venv(dist["base"] / "venv-editable")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", dist["src"]],
         cwd=dist["base"])
    found = _run([python, "-c", "from dpclab import resources as r; print(r.is_packaged()); "
                  "print(r.embedded_checkpoint_file()); print(r.notebooks_dir())"], cwd=dist["base"]).stdout.split()
    assert found == ["False", str(dist["src"] / "data" / "embedded" / "dpclab-tiny.pt"), str(dist["src"] / "notebooks")]
    assert not (dist["src"] / "dpclab" / resources.SHIPPED).exists()


def test_wheel_runs_train_and_the_quick_report_from_an_empty_folder(installed, tmp_path):
    """The issue's CI test: only the wheel installed, an empty folder, the repository nowhere on sys.path."""
    work = tmp_path / "empty"
    work.mkdir()
    where = _run([installed, "-c", "import dpclab, sys; print(dpclab.__file__); print(sys.path)"], cwd=work).stdout
    assert str(installed.parent.parent) in where.splitlines()[0] and str(ROOT) not in where
    assert _run([installed, "-m", "dpclab", "--version"], cwd=work).stdout.strip() == f"dpclab {dpclab.__version__}"

    t0 = time.perf_counter()
    train = _run([installed, "-m", "dpclab", "train", "--method", "coop", "--dataset", "world_tint", "--epochs", "1",
                  "--no-progress"], cwd=work).stdout
    TIMES["train coop world_tint --epochs 1 (3 seeds)"] = time.perf_counter() - t0
    assert "wrote embedded world dataset(s) world_tint under" in train
    assert len(re.findall(r"coop world_tint seed \d: base \d", train)) == 3 and "mean over 3 seeds" in train
    assert (work / "data" / "world" / "world_tint").is_dir() and (work / "runs").is_dir()

    t0 = time.perf_counter()
    report = _run([installed, "-m", "dpclab", "report", "--quick", "--only", "00", "03"], cwd=work, timeout=600)
    TIMES["report --quick --only 00 03"] = time.perf_counter() - t0
    assert "notebooks: the ones shipped with dpclab" in report.stdout
    index = (work / "reports" / "index.html").read_text()
    assert "2/2 notebooks" in index and "00_quickstart.html" in index and "03_omega_sliders.html" in index
    assert sorted((work / "figures").glob("*.png")), "the notebooks' figures are written to ./figures"
    prov = json.loads((work / "reports" / "provenance.json").read_text())
    assert prov["dpclab"]["version"] == dpclab.__version__
    assert not (work / "notebooks").exists()  # the packaged notebooks ran in place; nothing copied silently
    copied = _run([installed, "-m", "dpclab", "notebooks"], cwd=work).stdout
    assert "7 of 7 notebooks in notebooks as shipped" in copied
    assert sorted(p.name for p in (work / "notebooks").glob("*.ipynb")) == \
        sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    print("; ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))


def test_notebooks_command_keeps_edited_copies(tmp_path, capsys):
    from dpclab.lab.cli import main

    dest = tmp_path / "nbs"
    assert main(["notebooks", str(dest)]) == 0
    copied = sorted(p.name for p in dest.glob("*.ipynb"))
    assert copied == sorted(p.name for p in resources.notebooks_dir().glob("*.ipynb")) and len(copied) == 7
    assert f"7 of 7 notebooks in {dest}" in capsys.readouterr().out
    (dest / copied[0]).write_text("{}")  # an edit is never overwritten silently
    assert main(["notebooks", str(dest)]) == 0
    assert "kept (it differs" in capsys.readouterr().out and (dest / copied[0]).read_text() == "{}"
    assert main(["notebooks", str(dest), "--overwrite"]) == 0
    assert (dest / copied[0]).read_bytes() == (resources.notebooks_dir() / copied[0]).read_bytes()


def test_a_notebook_without_dpclab_names_the_install_command_in_its_first_output(dist, tmp_path):
    """A kernel without dpclab (a venv with this interpreter's packages but not the wheel): papermill runs
    notebook 00 from a temporary folder; the first output is the one-line install hint, and execution stops."""
    python = _venv(tmp_path / "venv-without")
    book = tmp_path / "00.ipynb"
    shutil.copy2(ROOT / "notebooks" / "00_quickstart.ipynb", book)
    res = subprocess.run([str(python), "-m", "papermill", "--no-progress-bar", str(book), str(tmp_path / "out.ipynb")],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs[0]["output_type"] == "error" and outputs[0]["ename"] == "ModuleNotFoundError"
    message = outputs[0]["evalue"]
    assert "\n" not in message and INSTALL in message and message.startswith("dpclab is not installed")
    print(f"first output without dpclab: {outputs[0]['ename']}: {message}")


def test_every_notebook_has_the_same_install_cell_after_its_parameters():
    cells = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", []), path.name
        cells.add("".join(code[1]["source"]))
    assert len(cells) == 1 and INSTALL in cells.pop()
    assert INSTALL in (ROOT / "README.md").read_text()


def test_fresh_clone_train_writes_the_world_it_needs(tmp_path, capsys):
    """As from a fresh clone (no data/world yet): train writes the embedded dataset with one line, then trains."""
    from dpclab.lab.cli import main

    root = tmp_path / "data" / "world"
    args = ["--dataset", "world_tint", "--data-root", str(root), "--seeds", "1", "--runs-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), "--results", str(tmp_path / "results.csv"), "--no-progress"]
    assert main(["eval", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("wrote embedded world dataset(s) world_tint under") == 1 and (root / "world_tint").is_dir()
    assert "zeroshot world_tint seed 1: base" in out
    assert main(["train", "--method", "coop", "--epochs", "1", *args]) == 0
    out = capsys.readouterr().out
    assert "wrote embedded world" not in out and "coop world_tint seed 1: base" in out


def test_resources_point_at_the_repository_in_a_clone():
    assert not resources.is_packaged()
    assert resources.embedded_checkpoint_file() == ROOT / "data" / "embedded" / "dpclab-tiny.pt"
    assert resources.embedded_manifest_file().is_file() and resources.notebooks_dir() == ROOT / "notebooks"


def test_a_missing_checkpoint_says_how_to_restore_it(tmp_path, monkeypatch):
    from dpclab.backbones import EMBEDDED_MODEL, load_clip

    monkeypatch.setenv("DPCLAB_EMBEDDED", str(tmp_path / "gone.pt"))
    with pytest.raises(FileNotFoundError, match=r"gone\.pt is missing\. It ships with dpclab; restore it with `git "
                                                r"checkout -- .*gone\.pt` or rebuild it"):
        load_clip(EMBEDDED_MODEL, "embedded", device="cpu")


def test_report_runs_local_notebooks_when_there_else_the_shipped_ones(tmp_path, monkeypatch):
    from dpclab.lab.report.run import notebook_source

    monkeypatch.chdir(tmp_path)
    folder, line = notebook_source()
    assert folder == resources.notebooks_dir() and line.startswith("notebooks: the ones shipped with dpclab")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "my_analysis.ipynb").write_text("{}")
    assert notebook_source()[0] == resources.notebooks_dir()  # someone's own notebooks are not run
    shutil.copy2(resources.notebooks_dir() / "00_quickstart.ipynb", tmp_path / "notebooks")
    assert notebook_source() == (Path("notebooks"), "notebooks: ./notebooks (found here)")
    assert notebook_source("elsewhere") == (Path("elsewhere"), "notebooks: elsewhere (--notebooks)")
