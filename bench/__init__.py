"""Benchmarks of Tidings (see bench/README.md). Nothing here is imported by service/ or workers/."""
