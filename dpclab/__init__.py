"""dpclab: CLIP prompt tuning and its Base-New Trade-off fixes (DPC, DePT) on one code path."""

__version__ = "0.1.0"
