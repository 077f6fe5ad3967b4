"""The protocol is in the repository: every ``docs/protocol.md#anchor`` the code, notebooks and docs point to is a
heading of docs/protocol.md, and nothing cites the SPEC file that is not in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "docs" / "protocol.md"


def _sources() -> list[Path]:
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("notebooks/*.ipynb")]
    return files + sorted((ROOT / "dpclab").rglob("*.py"))


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_protocol_anchor_referenced_exists():
    anchors = {_anchor(line.lstrip("#")) for line in PROTOCOL.read_text().splitlines() if line.startswith("#")}
    referenced = {}
    for path in _sources():
        for anchor in re.findall(r"protocol\.md#([\w\-]+)", path.read_text()):
            referenced.setdefault(anchor, path.relative_to(ROOT))
    assert referenced, "no file points to docs/protocol.md sections"
    missing = {a: str(p) for a, p in referenced.items() if a not in anchors}
    assert not missing, f"anchors not in docs/protocol.md: {missing}"


def test_nothing_cites_the_spec_file():
    cites = [f"{p.relative_to(ROOT)}: {m}" for p in _sources()
             for m in re.findall(r"SPEC(?: §|\.md| defaults?)", p.read_text())]
    assert not cites, cites
