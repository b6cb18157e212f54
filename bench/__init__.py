"""``make bench``: throughput, freshness, memory, recovery and scrape figures (not tests)."""
