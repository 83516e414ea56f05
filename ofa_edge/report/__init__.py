"""``ofa-edge report``: benchmark results (``benchmarks/results/*.json``) to an offline dashboard
(``benchmarks/dashboard/index.html`` and one PNG per panel)."""
