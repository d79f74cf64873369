"""The benchmark: latency and round trips of every endpoint against the floor (/readyz)."""
