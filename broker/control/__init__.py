"""control: everything off the hot path.

The quart-trio app (``app``: demo page, stats, topic administration), the hypercorn hand-off
for connections the data plane does not serve (``handoff``), Prometheus metrics and the static
files.
"""
