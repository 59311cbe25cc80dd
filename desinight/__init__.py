"""desinight: nightly production system for a DESI-like spectroscopic survey."""

__version__ = "0.1.0"
