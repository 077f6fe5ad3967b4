"""Build hook: the wheel carries the repository's top-level files that dpclab reads at run time.

They are committed once, at the top level (``data/embedded/``, ``notebooks/``); building copies them into the
package as ``dpclab/_shipped/<same relative path>``, where :mod:`dpclab.resources` finds them. ``MANIFEST.in`` puts
them into the sdist, so a wheel built from the sdist is the same. Everything else is in ``pyproject.toml``."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: the shipped files, as patterns relative to the repository root (dpclab.resources.SHIPPED names the package folder)
SHIPPED = ("data/embedded/dpclab-tiny.pt", "data/embedded/MANIFEST.json", "notebooks/*.ipynb")


class build_py_shipped(build_py):  # noqa: N801 - setuptools' command naming
    """``build_py``, then the shipped files copied into ``<build>/dpclab/_shipped/`` (not for editable installs:
    those read the repository's own copies)."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        root, target = Path(__file__).resolve().parent, Path(self.build_lib) / "dpclab" / "_shipped"
        shutil.rmtree(target, ignore_errors=True)  # nothing left over from an earlier build
        for pattern in SHIPPED:
            found = sorted(root.glob(pattern))
            if not found:
                raise FileNotFoundError(f"{root / pattern} matches nothing: it ships in the wheel (git checkout it)")
            for source in found:
                dest = target / source.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)


setup(cmdclass={"build_py": build_py_shipped})
