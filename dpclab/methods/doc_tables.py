"""The two copies of the method table in the docs, checked against :mod:`dpclab.methods.table` (the one source).

The README's methods table (``| name | what is trained | input | protocol defaults (epochs / batch / lr) |``) and
docs/protocol.md's hyperparameter table (``| method | epochs | batch | lr | notes |``) describe each method in words,
which the table does not hold; their names and training defaults are the table's. :func:`mismatches` lists every
row that disagrees with the table (a name missing, an extra name, other defaults); ``tests/test_extending.py`` runs
it on both files, and ``python -m dpclab.methods.doc_tables`` prints the rows the tables must have.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from dpclab.methods.table import METHODS, PLUGINS

#: the docs' files and the first header cell of their method tables
DOC_TABLES = {"README.md": "| name |", "docs/protocol.md": "| method |"}


def expected_rows() -> dict[str, dict]:
    """Row name -> training defaults (``{}`` for a method that trains nothing): each method by its name, each
    plug-in as ``<base>+<plugin>`` at the defaults of its own phase."""
    rows = {name: dict(entry.train) if entry.trainable else {} for name, entry in METHODS.items()}
    rows.update({f"<base>+{name}": dict(entry.train) for name, entry in PLUGINS.items()})
    return rows


def defaults_text(train: dict) -> str:
    """``"200 / 32 / 0.002"`` (epochs / batch / lr), or ``"–"`` for a method that trains nothing."""
    return f"{train['epochs']} / {train['batch_size']} / {train['lr']:g}" if train else "–"


def table_rows(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the markdown table of ``text`` whose header line starts with ``header``: the backticked name of
    each row's first cell -> its cells."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(header)), None)
    if start is None:
        raise ValueError(f"No table starting with {header!r}.")
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.search(r"`([^`]+)`", cells[0])
        if name is None:
            raise ValueError(f"Row without a `name` in its first cell: {line!r}.")
        rows[name.group(1)] = cells
    return rows


def _numbers(cells: list[str]) -> list[str]:
    """The cells' leading numbers ("4 anchors" -> "4"); "–" for a cell without one."""
    return [m.group(0) if (m := re.match(r"[0-9.]+", c)) else "–" for c in cells]


def mismatches(text: str, header: str) -> list[str]:
    """Every disagreement between the table of ``text`` under ``header`` and the method table, one line each."""
    rows, want = table_rows(text, header), expected_rows()
    out = [f"{name}: missing from the docs table" for name in want if name not in rows]
    out += [f"{name}: in the docs table but not in dpclab/methods/table.py" for name in rows if name not in want]
    for name, cells in rows.items():
        if name not in want:
            continue
        train = want[name]
        expected = [str(train["epochs"]), str(train["batch_size"]), f"{train['lr']:g}"] if train else ["–"] * 3
        if header == DOC_TABLES["README.md"]:
            found = _numbers([c.strip() for c in cells[-1].split("/")]) if "/" in cells[-1] else ["–"] * 3
        else:
            found = _numbers(cells[1:4])
        if found != expected:
            out.append(f"{name}: the docs say {' / '.join(found)}, dpclab/methods/table.py {' / '.join(expected)}")
    return out


def listing() -> list[str]:
    """One line per method and plug-in: its class and training defaults (``python -m dpclab methods``)."""
    lines = [f"{name:12s} {entry.cls.__name__:16s} defaults {entry.train}" for name, entry in METHODS.items()]
    lines += [f"+{name:11s} {entry.cls.__name__:16s} plug-in (e.g. coop+{name}), defaults {entry.train}"
              + (f", per base {entry.train_by_base}" if entry.train_by_base else "") for name, entry in PLUGINS.items()]
    return lines


def main(root: str = ".") -> int:
    """Print the rows the docs tables must have, then every mismatch of the docs under ``root`` (exit 1 if any)."""
    for name, train in expected_rows().items():
        print(f"| `{name}` | {defaults_text(train)} |")
    problems = [f"{doc}: {line}" for doc, header in DOC_TABLES.items() if (Path(root) / doc).is_file()
                for line in mismatches((Path(root) / doc).read_text(), header)]
    print("\n".join(problems) or "the docs tables match dpclab/methods/table.py")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
