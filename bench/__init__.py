"""Benchmarks (``make bench``): every figure a ratio to this machine's own limits, measured in
the same run."""
