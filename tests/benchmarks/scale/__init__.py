"""The pieces of the operator-at-scale benchmark (tests/benchmarks/operator_scale.py)."""
