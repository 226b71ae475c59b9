"""Benchmarks. Each script prints ratios (to an ideal, or to a baseline run side by side)."""
