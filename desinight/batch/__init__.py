"""Batch backends (local subprocesses, SLURM) behind one protocol, and script rendering."""
