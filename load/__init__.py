"""Load generators (C, in src/) and the benchmark runner (python -m load.bench)."""
