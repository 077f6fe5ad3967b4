"""dpclab: CLIP prompt tuning and its Base-New Trade-off fixes (DPC, DePT) on one code path."""

__version__ = "0.3.0"  # the one version string: pyproject.toml reads it, CHANGELOG.md names it
