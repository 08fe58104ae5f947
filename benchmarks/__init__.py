"""Benchmarks of fcpts-kit: quality, exact control, speed, memory, GPU throughput (see README.md here)."""
