"""lmmrec: multi-modal recommendation with large multi-modal encoders."""

__version__ = "0.1.0"
