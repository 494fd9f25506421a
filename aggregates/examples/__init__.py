"""Example domains used by the docs, the tests and the benchmarks."""
