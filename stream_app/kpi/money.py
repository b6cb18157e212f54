"""Money: conversion to the reporting currency, in integer cents."""

from __future__ import annotations

__all__ = ["Pricing", "cents_to_units"]

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Pricing:
    """Exchange rates (reporting-currency units per unit) and stage win probabilities,
    the stages listed in pipeline order."""

    fx_rates: dict[str, Decimal]
    stage_probability: dict[str, Decimal]

    @property
    def stage_rank(self) -> dict[str, int]:
        """Position of each stage in the pipeline (0 first)."""
        return {stage: rank for rank, stage in enumerate(self.stage_probability)}

    def to_cents(self, amount: str | Decimal, currency: str) -> int:
        """``amount`` in ``currency`` as reporting-currency cents, rounded half to even."""
        converted = (Decimal(amount) * self.fx_rates[currency]).quantize(
            _CENT, rounding=ROUND_HALF_EVEN
        )
        return int(converted * 100)


def cents_to_units(cents: int | float) -> float:
    """Cents as a float amount of currency units."""
    return cents / 100
