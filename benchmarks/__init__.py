"""Benchmarks, run as modules from the checkout root: `.venv/bin/python -m benchmarks.<name>`."""
