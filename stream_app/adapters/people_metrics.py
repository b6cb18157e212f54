"""Metric families of the people the KPIs are about: quotas and attainment, leads,
activities, and each owner's deals, pipeline and roster entry."""

from __future__ import annotations

__all__ = [
    "OwnerRows",
    "activity_families",
    "attainment_families",
    "bound_text",
    "lead_families",
    "owner_families",
    "owner_info_families",
    "quota_families",
    "required_coverage_families",
]

from collections.abc import Iterator

from prometheus_client.core import GaugeHistogramMetricFamily, Metric

from stream_app.adapters.exposition import GroupSamples
from stream_app.adapters.operational_metrics import gauge
from stream_app.kpi.activities import ACTIVITY_KINDS
from stream_app.kpi.money import cents_to_units
from stream_app.kpi.rows import Report


class OwnerRows:
    """The samples of the per-owner rows of the previous scrape, per kind of row (most
    owners' rows do not change between two scrapes; see :class:`GroupSamples`)."""

    def __init__(self) -> None:
        self.deals, self.pipeline = GroupSamples(), GroupSamples()
        self.activities, self.attainment = GroupSamples(), GroupSamples()
        self.forecasts = GroupSamples()


def bound_text(value: float | str) -> str:
    """A histogram bucket bound as Prometheus writes it."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def quota_families(report: Report) -> Iterator[Metric]:
    """Quotas and coverage per team (read from ``quotas``)."""
    labels = ["team", "period"]
    quota = gauge("quota_amount", "Quota of the period (month, quarter, last_month, "
                   "last_quarter), summed over owners.", labels)
    won = gauge("quota_won_amount", "Won in the period by the owners with a quota.",
                 labels)
    owners = gauge("quota_owners", "Owners with a quota for the period.", labels)
    at_quota = gauge("quota_owners_at_quota", "Owners whose won amount reached their "
                      "quota.", labels)
    share = gauge("quota_owners_at_quota_ratio", "Owners at quota / owners with a quota.",
                   labels)
    remaining = gauge("remaining_quota_amount", "quota - won (negative when exceeded).",
                       labels)
    coverage = gauge("pipeline_coverage_ratio", "Open pipeline at T / quota of the "
                      "current month or quarter.", labels)
    remaining_coverage = gauge("remaining_pipeline_coverage_ratio",
                                "Open pipeline at T / remaining quota.", labels)
    for q in report.quotas:
        row = [q.group, q.period]
        quota.add_metric(row, cents_to_units(q.quota_cents))
        won.add_metric(row, cents_to_units(q.won_cents))
        owners.add_metric(row, q.owners)
        at_quota.add_metric(row, q.owners_at_quota)
        remaining.add_metric(row, cents_to_units(q.remaining_cents))
        if q.share_at_quota is not None:
            share.add_metric(row, q.share_at_quota)
        if q.period in ("month", "quarter"):
            if q.coverage is not None:
                coverage.add_metric(row, q.coverage)
            if q.remaining_coverage is not None:
                remaining_coverage.add_metric(row, q.remaining_coverage)
    yield from (quota, won, owners, at_quota, share, remaining, coverage, remaining_coverage)


def required_coverage_families(report: Report) -> Iterator[Metric]:
    """The coverage needed to make quota per team (read from ``required_coverage``)."""
    required = gauge("required_coverage_ratio", "1 / win rate of the trailing 90 days: "
                      "the coverage needed to make quota.", ["team"])
    for r in report.required_coverage:
        if r.required_coverage is not None:
            required.add_metric([r.group], r.required_coverage)
    yield required


def attainment_families(report: Report, kept: OwnerRows) -> Iterator[Metric]:
    """Each owner's quota, won amount and attainment (read from ``attainment``)."""
    labels = ["owner", "period"]
    owner_quota = gauge("owner_quota_amount", "The owner's quota for the period.", labels)
    owner_won = gauge("owner_won_amount", "The owner's won amount in the period.", labels)
    attainment = gauge("quota_attainment_ratio", "won / quota of the owner.", labels)
    families = [owner_quota, owner_won, attainment]
    kept.attainment.add(report.attainment, families, lambda a: [
        ((a.owner, a.period), cents_to_units(a.quota_cents)),
        ((a.owner, a.period), cents_to_units(a.won_cents)),
        None if a.attainment is None else ((a.owner, a.period), a.attainment)])
    yield from families

def lead_families(report: Report) -> Iterator[Metric]:
    """Lead conversion by source and score band, and the live scores at T."""
    labels = ["source", "window"]
    created = gauge("created_leads", "Leads created in the window, by source.", labels)
    converted = gauge("leads_converted", "Leads converted in the window, by source.",
                       labels)
    disqualified = gauge("leads_disqualified", "Leads disqualified in the window.",
                          labels)
    conversion = gauge("lead_conversion_ratio", "converted / created in the window.",
                        labels)
    for lead in report.leads:
        row = [lead.source, lead.window]
        created.add_metric(row, lead.created)
        converted.add_metric(row, lead.converted)
        disqualified.add_metric(row, lead.disqualified)
        if lead.conversion is not None:
            conversion.add_metric(row, lead.conversion)
    yield from (created, converted, disqualified, conversion)
    labels = ["band", "window"]
    closed = gauge("lead_band_closed", "Leads closed in the window whose score at the "
                    "close was in the band.", labels)
    band_converted = gauge("lead_band_converted", "Of those, converted.", labels)
    band_ratio = gauge("lead_band_conversion_ratio", "converted / closed, by score band.",
                        labels)
    for band in report.lead_bands:
        row = [band.band, band.window]
        closed.add_metric(row, band.closed)
        band_converted.add_metric(row, band.converted)
        if band.conversion is not None:
            band_ratio.add_metric(row, band.conversion)
    yield from (closed, band_converted, band_ratio)
    scores = report.lead_scores
    if scores is None:
        return
    histogram = GaugeHistogramMetricFamily(
        "pulse_lead_score", "Current scores of the open leads at T.", labels=[])
    cumulative, buckets = 0, []
    score_bounds: tuple[float | str, ...] = (*scores.bounds, "+Inf")
    for bound, n in zip(score_bounds, scores.counts, strict=True):
        cumulative += n
        buckets.append((bound_text(bound), cumulative))
    histogram.add_metric([], buckets, scores.score_sum)
    yield histogram
    for name, doc, value in (
        ("open_leads", "Leads created and not converted or disqualified.",
         scores.open_leads),
        ("hot_leads", "Open leads whose score at T is at least the hot threshold.",
         scores.hot),
        ("hot_leads_waiting", "Hot leads still open PULSE_HOT_LEAD_WAIT_HOURS after "
         "they turned hot.", scores.waiting),
    ):
        family = gauge(name, doc, [])
        family.add_metric([], value)
        yield family

def activity_families(report: Report, kept: OwnerRows) -> Iterator[Metric]:
    """Activities per team and per owner."""
    team = gauge("activities", "Activities (calls, emails, meetings) logged in the window.",
                  ["team", "kind", "window"])
    per_won = gauge("activities_per_won_deal", "Activities logged in the window / deals "
                     "won in the window (pulse_deals_won).", ["team", "window"])
    owner = gauge("owner_activities", "Activities logged in the window by an owner "
                   "(owner label capped by PULSE_MAX_OWNERS).", ["owner", "kind", "window"])
    for a in report.activities:
        for kind, n in zip(ACTIVITY_KINDS, a.counts, strict=True):
            team.add_metric([a.group, kind, a.window], n)
        if a.per_won_deal is not None:
            per_won.add_metric([a.group, a.window], a.per_won_deal)
    kinds = [owner] * len(ACTIVITY_KINDS)
    kept.activities.add(report.owner_activities, kinds, lambda o: [
        ((o.owner, kind, o.window), n) for kind, n in zip(ACTIVITY_KINDS, o.counts, strict=True)])
    yield from (team, per_won, owner)

def owner_families(report: Report, kept: OwnerRows) -> Iterator[Metric]:
    """Sums only: an owner's deals are spread over every worker's partitions, so the
    owner's win rate, average deal size and cycle are recording rules over them."""
    wl = ["owner", "window"]
    windowed = (
        (gauge("owner_created_deals", "Deals the owner created in the window.", wl),
         lambda d: d.created),
        (gauge("owner_deals_won", "The owner's deals won in the window.", wl),
         lambda d: d.won),
        (gauge("owner_deals_lost", "The owner's deals lost in the window.", wl),
         lambda d: d.lost),
        (gauge("owner_won_deals_amount", "Won amount of the owner's deals won in the "
               "window.", wl), lambda d: cents_to_units(d.won_cents)),
        (gauge("owner_won_deals_cycle_seconds", "Sum over the owner's deals won in the "
               "window of seconds from created to won.", wl), lambda d: d.cycle_ms / 1000),
    )
    families = [family for family, _ in windowed]
    kept.deals.add(report.owner_deals, families, lambda d: [
        ((d.owner, d.window), value(d)) for _, value in windowed])
    yield from families
    pipeline = [gauge("owner_open_deals", "The owner's open deals at T.", ["owner"]),
                gauge("owner_open_pipeline_amount", "The owner's open amount at T.",
                      ["owner"]),
                gauge("owner_open_pipeline_weighted_amount",
                      "The owner's open amount x stage win probability.", ["owner"])]
    kept.pipeline.add(report.owner_pipeline, pipeline, lambda p: [
        ((p.owner,), p.open_deals), ((p.owner,), cents_to_units(p.cents)),
        ((p.owner,), p.weighted_cents / 100)])
    yield from pipeline


def owner_info_families(report: Report) -> Iterator[Metric]:
    """The roster: a family of its own, so a scrape reuses it while no profile changed."""
    info = gauge("owner_info", "The roster (rep.updated): 1 per owner with the owner's "
                 "name and team; join it to show names: * on(owner) group_left(name) "
                 "pulse_owner_info.", ["owner", "name", "team"])
    for owner, (name, team) in sorted(report.owner_profiles.items()):
        info.add_metric([owner, name, team], 1)
    yield info
