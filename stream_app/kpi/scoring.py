"""Lead scoring rules (YAML) and the score of a lead at a time: pure maths.

score(T) = fit points + sum over the lead's engagements at or before T of
points(action) x 0.5 ^ ((T - engagement time) / half-life). Fit points come from
the lead's industry, company size and job title and do not decay.
"""

from __future__ import annotations

__all__ = ["DEFAULT_RULES_PATH", "ScoringRules", "SizeBand", "TitleTier", "load_rules"]

import itertools
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stream_app.events.models import ENGAGEMENT_ACTIONS
from stream_app.kpi.windows import MS_PER_DAY

DEFAULT_RULES_PATH = Path(__file__).with_name("lead_scoring_default.yml")

Points = Annotated[float, Field(ge=-1000, le=1000)]


class SizeBand(BaseModel):
    """Companies with fewer than ``below`` employees (no bound when None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    below: int | None
    points: Points


class TitleTier(BaseModel):
    """Points for a job title holding one of ``keywords`` as a word."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keywords: tuple[str, ...] = Field(min_length=1)
    points: Points


class _Fit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    industry: dict[str, Points] = Field(default_factory=dict)
    company_size: tuple[SizeBand, ...] = ()
    job_title: tuple[TitleTier, ...] = ()


class ScoringRules(BaseModel):
    """Validated scoring rules; see ``lead_scoring_default.yml`` for the meaning of each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    half_life_days: float = Field(gt=0)
    hot_threshold: float
    band_edges: tuple[float, ...] = Field(min_length=1)
    histogram_buckets: tuple[float, ...] = Field(min_length=1)
    fit: _Fit = _Fit()
    engagement: dict[str, Points]

    @field_validator("band_edges", "histogram_buckets")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if list(value) != sorted(set(value)):
            raise ValueError("must be strictly increasing")
        return value

    @model_validator(mode="after")
    def _every_action(self) -> ScoringRules:
        missing = [a for a in ENGAGEMENT_ACTIONS if a not in self.engagement]
        unknown = [a for a in self.engagement if a not in ENGAGEMENT_ACTIONS]
        if missing or unknown:
            raise ValueError(f"engagement must list exactly {', '.join(ENGAGEMENT_ACTIONS)}"
                             f" (missing {missing}, unknown {unknown})")
        return self

    @property
    def half_life_ms(self) -> float:
        """Half-life in milliseconds."""
        return self.half_life_days * MS_PER_DAY

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names: "0-20", "20-40", ..., "60+" for edges 20, 40, 60."""
        edges = [_fmt(e) for e in self.band_edges]
        return (f"<{edges[0]}" if self.band_edges[0] <= 0 else f"0-{edges[0]}",
                *(f"{a}-{b}" for a, b in itertools.pairwise(edges)),
                f"{edges[-1]}+")

    def band(self, score: float) -> str:
        """Band of a score: the first band whose upper edge is above it."""
        for name, edge in zip(self.bands, self.band_edges, strict=False):
            if score < edge:
                return name
        return self.bands[-1]

    def fit_points(self, industry: str | None, company_size: int | None,
                   job_title: str | None) -> float:
        """Fit points of a lead's firmographics."""
        points = 0.0
        if industry:
            points += self._industries.get(industry.lower(), 0.0)
        if company_size is not None:
            for band in self.fit.company_size:
                if band.below is None or company_size < band.below:
                    points += band.points
                    break
        if job_title:
            words = job_title.lower()
            for pattern, tier_points in self._title_tiers:
                if pattern is not None and pattern.search(words):
                    points += tier_points
                    break
        return points

    @cached_property
    def _industries(self) -> dict[str, float]:
        """Industry points by lower-cased name (built once, not per lead)."""
        return {name.lower(): value for name, value in self.fit.industry.items()}

    @cached_property
    def _title_tiers(self) -> tuple[tuple[re.Pattern[str] | None, float], ...]:
        """Per job-title tier, one compiled pattern matching any of its keywords as whole
        words (None for a tier without keywords), and its points."""
        return tuple(
            (re.compile("|".join(rf"\b{re.escape(k.lower())}\b" for k in tier.keywords))
             if tier.keywords else None, tier.points)
            for tier in self.fit.job_title)

    def score(self, fit: float, engagements: Iterable[tuple[int, str]], at_ms: int) -> float:
        """Score at ``at_ms`` of a lead with ``fit`` points and (time_ms, action)
        engagements, summed in time order."""
        return self.score_in_order(fit, sorted(engagements), at_ms)

    def score_in_order(self, fit: float, engagements: Iterable[tuple[int, str]],
                       at_ms: int) -> float:
        """:meth:`score` of engagements already sorted by (time_ms, action)."""
        total = fit
        points, half_life = self.engagement, self._half_life_ms
        for time_ms, action in engagements:
            if time_ms <= at_ms:
                total += points[action] * 0.5 ** ((at_ms - time_ms) / half_life)
        return total

    def decayed_to_last(self, engagements: Sequence[tuple[int, str]]
                        ) -> tuple[float, int | None]:
        """The points of engagements sorted by (time_ms, action), each decayed to the
        last one's time, and that time (None without engagements): the score at any
        ``at_ms`` not before it is ``fit + points * 0.5 ** ((at_ms - last) / half_life)``,
        one power per lead instead of one per engagement."""
        if not engagements:
            return 0.0, None
        last = engagements[-1][0]
        return self.score_in_order(0.0, engagements, last), last

    @cached_property
    def _half_life_ms(self) -> float:
        return self.half_life_ms


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def load_rules(path: str | Path | None = None) -> ScoringRules:
    """Rules from a YAML file (the default when None); errors name the file and field."""
    source = Path(path) if path is not None else DEFAULT_RULES_PATH
    raw: Any = yaml.safe_load(source.read_text())
    try:
        return ScoringRules.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors(include_url=False))
        raise ValueError(f"{source}: invalid lead-scoring rules: {problems}") from None
