"""The benchmark harness: python -m bench."""
