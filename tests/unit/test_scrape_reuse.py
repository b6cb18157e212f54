"""A scrape that reuses what did not change: the text renderer's kept lines and
families, the collector's kept sections and the report reused within a day, each
against what a scrape built from nothing writes."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

import stream_app.kpi.report as report_module
from stream_app.adapters.exposition import GroupSamples, RowGauge, TextRenderer, value_text
from stream_app.adapters.metrics import PulseCollector
from stream_app.kpi.calendar import UTC_CALENDAR
from stream_app.kpi.forecast_plans import SLIPPED, PlanKpis
from stream_app.kpi.forecast_report import (
    ForecastAccuracyKpis,
    ForecastKpis,
    ForecastRows,
    OwnerForecastKpis,
)
from stream_app.kpi.kinds import OWNER_DAY, OWNER_OPEN
from stream_app.kpi.leads import ScoreInputs
from stream_app.kpi.live import ReportMemo, ReportReuse
from stream_app.kpi.report import ReportConfig, build_report
from stream_app.kpi.rows import AttainmentKpis, QuotaKpis, Report, RequiredCoverageKpis
from stream_app.kpi.scoring import load_rules
from stream_app.kpi.snapshot import Cell, Snapshot, apply_cell_changes, snapshot_from_cells
from stream_app.kpi.windows import window_specs
from tests.unit.test_metrics import Source

DAY = 20_500
MS_PER_DAY = 86_400_000
MONTH = UTC_CALENDAR.current_periods(DAY)["month"]
CONFIG = ReportConfig(window_specs((3, 30)), ("P", "N"),
                      {"P": Decimal("0.2"), "N": Decimal("0.9")}, scoring=load_rules(None))


#: Sample values around the edges of Prometheus' text form (exponents from 1e6 up).
_VALUES = (0, 1, 1.5, 2, -3, 999_999, 10**6, 10**9, -(10**7), 2**53, 2**53 + 1, 1.5e-7,
           123_456.5, 2.0, float("inf"), True)


class _Changing(CollectorRegistry):
    """A registry whose one family changes between collections: values move, series
    come and go, and sometimes the very same family object comes again."""

    def __init__(self, seed: int):
        super().__init__()
        self.rng = random.Random(seed)
        self.family: RowGauge | None = None

    def collect(self):  # type: ignore[no-untyped-def]
        rng = self.rng
        if self.family is None or rng.random() < 0.7:
            family = RowGauge("pulse_thing", 'A "thing"\\n.', ["team", "window"])
            for team in rng.sample(["A", "B", 'C"q', "D\\n", "E f 1"], rng.randrange(1, 6)):
                for window in ("3d", "30d"):
                    family.add_metric([team, window], rng.choice(_VALUES))
            self.family = family
        yield self.family


def test_kept_lines_and_families_write_what_prometheus_client_writes() -> None:
    for seed in range(5):
        registry, renderer = _Changing(seed), TextRenderer()
        for _ in range(40):
            text = renderer.render(registry)
            assert text == generate_latest(_Frozen(registry.family))


class _Frozen(CollectorRegistry):
    def __init__(self, family: RowGauge | None):
        super().__init__()
        self.family = family

    def collect(self):  # type: ignore[no-untyped-def]
        yield self.family


class _Source(Source):
    """The collector's source, giving the report it is told to."""

    def __init__(self, report: Report):
        super().__init__(None)
        self.current = report

    def report(self) -> Report:
        return self.current


def _snapshot(rng: random.Random) -> Snapshot:
    teams = ["A", "B"]
    return Snapshot(
        buckets={(rng.choice(teams), DAY - rng.randrange(40)): [rng.randrange(5) for _ in range(6)]
                 for _ in range(20)},
        open={(rng.choice(teams), rng.choice("PN"), DAY - rng.randrange(60)):
              [rng.randrange(1, 4), rng.randrange(10**6)] for _ in range(10)},
        owner_deals={(f"o{rng.randrange(6)}", DAY - rng.randrange(40)):
                     [rng.randrange(3) for _ in range(5)] for _ in range(15)},
        owner_activities={(f"o{rng.randrange(6)}", DAY - rng.randrange(40)):
                          [rng.randrange(3) for _ in range(3)] for _ in range(15)},
        quota_cents={(f"o{n}", MONTH): rng.randrange(1, 10**6) for n in range(4)},
        quota_team={(f"o{n}", MONTH): "A" for n in range(4)},
        owner_won={(f"o{rng.randrange(6)}", MONTH): rng.randrange(10**6) for _ in range(3)},
        open_leads=[ScoreInputs("Web", 10.0 * rng.randrange(6),
                                ((DAY * MS_PER_DAY - rng.randrange(10**9), "demo_request"),),
                                None) for _ in range(8)])


def test_a_collector_reusing_sections_writes_what_a_fresh_one_writes() -> None:
    rng = random.Random(4)
    snaps = [_snapshot(rng) for _ in range(3)]
    first = build_report(snaps[0], DAY * MS_PER_DAY, CONFIG)
    source = _Source(first)
    registry, renderer = CollectorRegistry(), TextRenderer()
    PulseCollector(source, registry)
    for step in range(30):
        snap = rng.choice(snaps)
        source.current = (build_report(snap, (DAY + rng.randrange(2)) * MS_PER_DAY, CONFIG)
                          if step % 3 else source.current)
        fresh = CollectorRegistry()
        PulseCollector(_Source(source.current), fresh)
        assert renderer.render(registry) == generate_latest(fresh)


def test_reports_reused_within_a_day_equal_reports_built_again() -> None:
    rng = random.Random(9)
    snap = _snapshot(rng)
    reuse = ReportReuse(CONFIG)
    at = DAY * MS_PER_DAY + 1000
    first = reuse.report("v1", snap, at)
    assert reuse.report("v1", snap, at) is first
    later = reuse.report("v1", snap, at + 3_600_000)
    assert later == build_report(snap, at + 3_600_000, CONFIG)
    assert later.windows is first.windows and later.lead_scores != first.lead_scores
    next_day = reuse.report("v1", snap, at + MS_PER_DAY)
    assert next_day == build_report(snap, at + MS_PER_DAY, CONFIG)
    assert next_day.windows is not first.windows
    other = _snapshot(rng)
    assert reuse.report("v2", other, at + MS_PER_DAY) == build_report(
        other, at + MS_PER_DAY, CONFIG)


def _owner_families() -> list[RowGauge]:
    return [RowGauge("pulse_owner_a", "A.", ["owner", "window"]),
            RowGauge("pulse_owner_b", "B.", ["owner", "window"])]


def _owner_samples(row: tuple[str, str, float, float | None]
                   ) -> list[tuple[list[str], float] | None]:
    owner, window, a, b = row
    return [([owner, window], a), None if b is None else ([owner, window], b)]


def test_an_owner_whose_rows_are_the_same_object_reuses_its_blocks() -> None:
    kept = GroupSamples()
    same = (("o1", "7d", 1, 2), ("o1", "all", 3, None))
    first = _owner_families()
    kept.add({"o1": same, "o2": tuple([("o2", "7d", 4, 4)])}, first, _owner_samples)
    second = _owner_families()
    kept.add({"o1": same, "o2": tuple([("o2", "7d", 4, 4)])}, second, _owner_samples)
    assert second[0].block_samples[0] is first[0].block_samples[0]
    assert second[0].block_texts[0] is first[0].block_texts[0]
    assert second[0].block_samples[1] is not first[0].block_samples[1]  # equal, not the same
    line = 'pulse_owner_b{owner="o1",window="7d"} 2.0\n'
    assert second[1].block_texts[0] == line
    assert second[1].block_samples[0] == ((("o1", "7d"), 2, line),)


@pytest.mark.parametrize("seed", range(5))
def test_owner_groups_kept_across_scrapes_write_what_prometheus_client_writes(seed: int) -> None:
    """Owners come, go and change one value or both (an int becoming the equal float too);
    an unchanged owner keeps its tuple, as a report reusing its rows does."""
    rng = random.Random(seed)
    kept, renderer = GroupSamples(), TextRenderer()
    rows = {(f"o {n}", window): (rng.randrange(3), rng.randrange(3))
            for n in range(6) for window in ("7d", "all")}
    groups: dict[str, tuple[tuple[str, str, float, float | None], ...]] = {}
    for _ in range(40):
        for key in rng.sample(sorted(rows), 4):
            a, b = rows[key]
            rows[key] = (rng.choice([a, a + 1, float(a), rng.choice(_VALUES)]),
                         rng.choice([b, None, 7]))
        if rng.random() < 0.2 and len(rows) > 4:
            rows.pop(rng.choice(sorted(rows)))
        owners = sorted({owner for owner, _ in rows})
        fresh = {owner: tuple((o, window, a, b) for (o, window), (a, b) in sorted(rows.items())
                              if o == owner) for owner in owners}
        groups = {owner: groups[owner] if groups.get(owner) == owned else owned
                  for owner, owned in fresh.items()}
        families = _owner_families()
        kept.add(groups, families, _owner_samples)
        plain = _owner_families()
        for owned in groups.values():
            for row in owned:
                for family, sample in zip(plain, _owner_samples(row), strict=True):
                    if sample is not None:
                        family.add_metric(*sample)
        assert renderer.render_families(families) == generate_latest(_Many(plain))
        assert [s for f in families for s in f.samples] == [s for f in plain for s in f.samples]


class _Many(CollectorRegistry):
    def __init__(self, families: list[RowGauge]):
        super().__init__()
        self.families = families

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.families


@pytest.mark.parametrize("value", [*_VALUES, -1, -(2**53) + 1, -(2**53), 999_999.0, -0.0,
                                   float("nan"), float("-inf"), False, 10**20])
def test_value_text_is_prometheus_clients_text(value: float) -> None:
    assert value_text(value) == floatToGoString(value)


def test_a_report_after_one_owners_change_keeps_the_other_owners_rows() -> None:
    """An owner whose cells did not change keeps the very same row tuples (what lets the
    exporter write only the owners that changed); the report equals a fresh one."""
    cells: dict[Cell, Any] = {
        (OWNER_DAY, "o1", str(DAY - 1)): [1, 0, 0, 0, 0],
        (OWNER_DAY, "o2", str(DAY - 2)): [2, 1, 0, 500, 86_400_000],
        (OWNER_OPEN, "o1", "P"): [1, 100], (OWNER_OPEN, "o2", "N"): [1, 200]}
    snap = snapshot_from_cells(cells, {0})
    reuse, at = ReportReuse(CONFIG), DAY * MS_PER_DAY + 1000
    first = reuse.report("v1", snap, at)
    for cell, new in (((OWNER_DAY, "o2", str(DAY)), [0, 1, 0, 300, 0]),
                      ((OWNER_OPEN, "o2", "N"), [0, 50])):
        old = cells.get(cell)
        cells[cell] = new if old is None else [a + b for a, b in zip(old, new, strict=True)]
        assert apply_cell_changes(snap, [(cell, old, cells[cell])])
    second = reuse.report("v2", snap, at)
    assert second == build_report(snapshot_from_cells(cells, {0}), at, CONFIG)
    assert second.owner_deals["o1"] is first.owner_deals["o1"]
    assert second.owner_pipeline["o1"] is first.owner_pipeline["o1"]
    assert second.owner_deals["o2"] != first.owner_deals["o2"]
    assert second.owner_pipeline["o2"][0].cents == 250


def _parts(rng: random.Random) -> dict[str, Any]:
    owners = {f"o{n}": tuple(OwnerForecastKpis(f"o{n}", period, rng.randrange(10**6),
                                               rng.randrange(10**6), 1.0, 2.0)
                             for period in ("month", "quarter")) for n in range(3)}
    return {
        "forecasts": (ForecastKpis("A", "month", "2026-02", rng.randrange(10**6), 10.5, 0.0,
                                   1.0, 2.0, 3, 28),),
        "forecast_accuracy": (ForecastAccuracyKpis("A", "last_month", "2026-01", "day_1",
                                                   rng.randrange(10**6), 7),),
        "forecast_plans": (PlanKpis("A", SLIPPED, "", "", rng.randrange(5), 100),),
        "owner_forecasts": owners,
        "forecast_alert_margin": 0.1,
        "quotas": (QuotaKpis("A", "month", MONTH, 1000, 2, rng.randrange(3), 500, 70),),
        "required_coverage": (RequiredCoverageKpis("A", rng.randrange(1, 9), 10),),
        "attainment": {owner: (AttainmentKpis(owner, "month", 1000, rng.randrange(2000)),)
                       for owner in ("o1", "o2")},
    }


def test_report_parts_are_written_again_only_when_their_rows_changed() -> None:
    """Each part of the forecast (live, accuracy, plans, owners) and of the quotas (teams,
    required coverage, owners) is its own section: a report in which one part changed
    builds only that part's families again (the others are the very objects of the
    scrape before), and the text equals a fresh collector's."""
    rng = random.Random(3)
    base = replace(build_report(_snapshot(rng), DAY * MS_PER_DAY, CONFIG), **_parts(rng))
    source = _Source(base)
    registry, renderer = CollectorRegistry(), TextRenderer()
    collector = PulseCollector(source, registry)
    for part, names in _PART_FAMILIES.items():
        before = collector.kpi_families(base)  # kept alive: their ids stay theirs
        changed = replace(base, **{part: _parts(rng)[part]})
        rebuilt = {family.name for family in collector.kpi_families(changed)
                   if not any(family is old for old in before)}
        assert rebuilt - _ALWAYS_BUILT == {f"pulse_{name}" for name in names}, part
        collector.kpi_families(base)
        source.current = changed
        fresh = CollectorRegistry()
        PulseCollector(_Source(changed), fresh)
        assert renderer.render(registry) == generate_latest(fresh)


#: Families every scrape builds (T, the latest event, the forecast's freshness).
_ALWAYS_BUILT = {"pulse_asof_timestamp_seconds", "pulse_last_event_timestamp_seconds",
                 "pulse_forecast_stale", "pulse_forecast_compute_seconds"}
_PART_FAMILIES = {
    "forecasts": ("forecast_won_amount", "forecast_won_so_far_amount",
                  "forecast_open_deals_amount", "forecast_new_deals_amount",
                  "forecast_won_low_amount", "forecast_won_high_amount",
                  "forecast_period_elapsed_ratio", "forecast_period_elapsed_days",
                  "forecast_period_days", "forecast_alert_margin_ratio"),
    "forecast_accuracy": ("forecast_snapshot_amount", "forecast_actual_won_amount",
                          "forecast_error_ratio"),
    "forecast_plans": ("forecast_slipped_deals", "forecast_slipped_amount",
                       "forecast_pushed_deals", "forecast_pushed_amount",
                       "forecast_closing_deals", "forecast_closing_amount"),
    "owner_forecasts": ("owner_forecast_won_amount", "owner_forecast_won_so_far_amount",
                        "owner_forecast_won_low_amount", "owner_forecast_won_high_amount"),
    "quotas": ("quota_amount", "quota_won_amount", "quota_owners", "quota_owners_at_quota",
               "quota_owners_at_quota_ratio", "remaining_quota_amount",
               "pipeline_coverage_ratio", "remaining_pipeline_coverage_ratio"),
    "required_coverage": ("required_coverage_ratio",),
    "attainment": ("owner_quota_amount", "owner_won_amount", "quota_attainment_ratio"),
}


def test_owner_forecasts_sent_back_unchanged_are_not_grouped_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    owners = tuple(row for rows in _parts(rng)["owner_forecasts"].values() for row in rows)
    answers = [ForecastRows(owners=owners)]
    grouped: list[object] = []
    real = report_module._by_owner
    monkeypatch.setattr(report_module, "_by_owner",
                        lambda rows: grouped.append(rows) or real(rows))
    memo, snap = ReportMemo(lambda basis, day: answers[-1]), _snapshot(rng)
    at = DAY * MS_PER_DAY
    first = build_report(snap, at, CONFIG, memo)
    snap.versions = {}  # every part read again
    assert build_report(snap, at, CONFIG, memo).owner_forecasts is first.owner_forecasts
    assert grouped == [owners]
    answers.append(ForecastRows(owners=owners[1:]))
    third = build_report(snap, at, CONFIG, memo)
    assert grouped == [owners, owners[1:]]
    assert third.owner_forecasts == real(owners[1:])
    assert third.owner_forecasts["o1"] is first.owner_forecasts["o1"]
