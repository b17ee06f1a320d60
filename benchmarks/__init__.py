"""The benchmark suite behind ``run.py bench``: one module per measured thing, listed in SUITE."""
