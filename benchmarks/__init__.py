"""Benchmark scripts; run one as ``python -m benchmarks.NAME`` from the repository root."""
