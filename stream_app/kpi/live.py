"""Reports of a state that changes a little between scrapes: the previous report again
while its inputs did not change, moved to a later time of the same day when only T
did."""

from __future__ import annotations

__all__ = ["CACHED_VALUES", "ReportMemo", "ReportReuse"]

from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

from stream_app.kpi.forecast_report import ForecastSource, PathCache
from stream_app.kpi.owner_kpis import OwnerDealRows
from stream_app.kpi.quota_rows import QuotaRows
from stream_app.kpi.report import (
    LeadTerms,
    ReportConfig,
    build_report,
    lead_score_kpis,
    owner_activity_rows,
)
from stream_app.kpi.rows import PerOwner, Report
from stream_app.kpi.snapshot import Snapshot

#: Values :meth:`ReportMemo.cached` keeps (a report uses ~40: forecasts and histories of
#: T's day and of the 17 checkpoints of the last closed month and quarter, and the owner
#: forecasts grouped by owner).
CACHED_VALUES = 64


class ReportMemo:
    """Parts of the last report, each kept with the versions of the snapshot fields it
    read (:attr:`Snapshot.versions`) and T's day: a part whose fields did not change is
    the very same object in the next report."""

    def __init__(self, forecasts: ForecastSource | None = None) -> None:
        self._parts: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._owners: dict[str, PerOwner[Any]] = {}
        #: The owners' deal rows and pipeline, kept for the owners that did not change.
        self.owner_deals = OwnerDealRows()
        self.owner_activities = owner_activity_rows()
        #: The owners' quota rows, kept for the owners that did not change.
        self.quota_rows = QuotaRows()
        self._cached: dict[str, tuple[Hashable, Any]] = {}
        self.paths = PathCache()
        #: The open leads' decayed engagement points (see :func:`lead_score_kpis`).
        self.lead_terms: LeadTerms = {}
        #: Where the forecast rows come from (None: computed in the report, cached here).
        self.forecasts = forecasts

    def cached(self, name: str, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` (whatever T's day): the value kept under
        ``name`` while its key stays the same. The oldest of more than
        :data:`CACHED_VALUES` names is forgotten."""
        known = self._cached.pop(name, None)
        if known is None or known[0] != key:
            known = (key, compute())
        self._cached[name] = known
        while len(self._cached) > CACHED_VALUES:
            del self._cached[next(iter(self._cached))]
        return known[1]

    def per_owner(self, name: str, rows: PerOwner[Any]) -> PerOwner[Any]:
        """``rows`` with every owner's rows that equal the last ones kept under ``name``
        replaced by those (the very same tuple), and the last mapping itself when no
        owner's rows changed."""
        last = self._owners.get(name, {})
        kept = {owner: before if (before := last.get(owner)) is owned or before == owned
                else owned
                for owner, owned in rows.items()}
        if len(kept) == len(last) and all(
                a is b for a, b in zip(kept.values(), last.values(), strict=True)) and (
                list(kept) == list(last)):
            return last
        self._owners[name] = kept
        return kept

    def part(self, name: str, snap: Snapshot, fields: tuple[str, ...], as_of_day: int,
             compute: Callable[[], Any], inputs: tuple[Any, ...] = ()) -> Any:
        """The part ``name``: kept, or ``compute()``d (and kept when every field read has
        a version); ``inputs``: other values it is computed from (compared by value)."""
        versions = tuple(snap.versions.get(f) for f in fields)
        key = (as_of_day, versions, inputs)
        known = self._parts.get(name)
        if known is not None and known[0] == key:
            return known[1]
        value = compute()
        if None in versions:
            self._parts.pop(name, None)
        else:
            self._parts[name] = (key, value)
        return value


class ReportReuse:
    """Builds reports, reusing the previous one when the caller says its inputs are the
    same (``inputs``: anything that changes when the snapshot's content may have, such
    as versions of the tables and partitions exported).

    Every KPI but the live lead scores depends on T through T's day only, so at a later
    T of the same day the previous report is reused with T and the lead scores
    recomputed: the other rows stay the very same objects, which lets the exporter
    reuse their text."""

    def __init__(self, config: ReportConfig, forecasts: ForecastSource | None = None):
        self._config = config
        self._last: tuple[Hashable, Report] | None = None
        self._memo = ReportMemo(forecasts)

    def report(self, inputs: Hashable, snapshot: Snapshot, as_of_ms: int) -> Report:
        """The report of ``snapshot`` at ``as_of_ms``."""
        last = self._last
        if last is not None and last[0] == inputs:
            previous = last[1]
            if previous.as_of_ms == as_of_ms:
                return previous
            day_of = self._config.calendar.day_of
            if day_of(previous.as_of_ms) == day_of(as_of_ms):
                scores = lead_score_kpis(snapshot, self._config, as_of_ms,
                                         self._memo.lead_terms)
                report = replace(previous, as_of_ms=as_of_ms,
                                 lead_scores=previous.lead_scores
                                 if scores == previous.lead_scores else scores)
                self._last = (inputs, report)
                return report
        report = build_report(snapshot, as_of_ms, self._config, self._memo)
        self._last = (inputs, report)
        return report
