"""Tests on a real one-node SLURM: deploy/slurm used as a user would, and batch-system faults."""
