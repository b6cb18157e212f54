"""Thin adapters, one module per framework: Faust, Kafka, Redis, Prometheus, processes."""
