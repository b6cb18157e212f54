"""Pipeline Pulse: live sales KPIs from CRM CloudEvents."""

__all__ = ["__version__"]

__version__ = "0.1.0"
