"""Pure KPI maths: event-time windows, per-entity state and each KPI's accumulator.

Nothing in this package imports faust, aiokafka, redis or prometheus_client.
"""
