"""Where dpclab's shipped files are: the embedded checkpoint, its manifest, the notebooks.

The repository holds one committed copy of each at its top level (``data/embedded/``, ``notebooks/``). Building a
wheel (``python -m build``; ``setup.py`` does the copying) puts them into the package as ``dpclab/_shipped/``, read
here with :mod:`importlib.resources`; in a clone or an editable install, where there is no ``_shipped`` folder,
they are read at the repository's top level. One function per resource; every command and test asks these.

>>> embedded_checkpoint_file().name, notebooks_dir().name
('dpclab-tiny.pt', 'notebooks')
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: the package folder the wheel carries the top-level files in (setup.py copies them there at build time)
SHIPPED = "_shipped"

PACKAGE_DIR = Path(__file__).resolve().parent
#: the repository root of a clone (meaningful only when the files are found there)
REPO_DIR = PACKAGE_DIR.parent


def shipped(relative: str) -> Path:
    """The shipped file or folder ``relative`` (e.g. ``"notebooks"``): the packaged copy when dpclab was installed
    from a wheel, else the repository's own. Returned even when missing, so that the caller can say so."""
    packaged = resources.files("dpclab").joinpath(SHIPPED, *relative.split("/"))
    if isinstance(packaged, Path) and packaged.exists():
        return packaged
    return REPO_DIR / relative


def is_packaged() -> bool:
    """Whether dpclab runs from an installed wheel (its files in ``dpclab/_shipped/``) rather than a clone."""
    return resources.files("dpclab").joinpath(SHIPPED).is_dir()


def embedded_checkpoint_file() -> Path:
    """The embedded tiny CLIP's checkpoint (``data/embedded/dpclab-tiny.pt``)."""
    return shipped("data/embedded/dpclab-tiny.pt")


def embedded_manifest_file() -> Path:
    """The checkpoint's manifest: its digest and the exact command that trained it (``data/embedded/MANIFEST.json``)."""
    return shipped("data/embedded/MANIFEST.json")


def notebooks_dir() -> Path:
    """The folder of the shipped notebooks (``notebooks/``)."""
    return shipped("notebooks")


__all__ = ["shipped", "is_packaged", "embedded_checkpoint_file", "embedded_manifest_file", "notebooks_dir",
           "SHIPPED"]
