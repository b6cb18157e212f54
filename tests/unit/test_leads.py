"""Lead scoring rules and lead state: tables of fit points, decay, bands and crossings."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.kpi.calendar import UTC_CALENDAR
from stream_app.kpi.leads import (
    LeadState,
    ScoreInputs,
    apply_lead_event,
    hot_crossings,
    lead_contributions,
    score_inputs,
)
from stream_app.kpi.report import LeadTerms, ReportConfig, lead_score_kpis
from stream_app.kpi.scoring import DEFAULT_RULES_PATH, load_rules
from stream_app.kpi.snapshot import Snapshot
from stream_app.kpi.windows import MS_PER_DAY, ms_from_datetime
from stream_app.sources.catalogue import LeadBook
from tests.reference import _fit_points, _score
from tests.unit.events import ev

RULES = load_rules()


@pytest.mark.parametrize(("industry", "size", "title", "points"), [
    (None, None, None, 0),
    ("Software", None, None, 15),
    ("SOFTWARE", 9, None, 15),
    ("Retail", 10, None, 5),
    (None, 249, "Head of Sales", 10 + 15),
    (None, 5000, "VP Sales", 20 + 20),
    (None, None, "Vice President, Ops", 20),
    (None, None, "Leader of the pack", 0),  # "lead" must be a whole word
    ("Healthcare", 300, "IT Manager", 10 + 15 + 8),
])
def test_fit_points(industry: str | None, size: int | None, title: str | None,
                    points: float) -> None:
    assert RULES.fit_points(industry, size, title) == points


_KEYWORDS = sorted({k for tier in RULES.fit.job_title for k in tier.keywords})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*_KEYWORDS, "Senior", "of", "-", "_", "x", ",", " ", "Co"]),
                max_size=6), st.sampled_from(["", " ", "_", "-", "/"]))
def test_job_title_points_equal_the_references_whole_word_search(
        parts: list[str], glue: str) -> None:
    title = glue.join(parts)
    expected = _fit_points(yaml.safe_load(DEFAULT_RULES_PATH.read_text()), {"job_title": title})
    assert RULES.fit_points(None, None, title) == expected


@pytest.mark.parametrize(("age_days", "points"), [
    (0, 25.0), (30, 12.5), (60, 6.25), (-1, 0.0),
])
def test_engagement_points_halve_every_half_life(age_days: float, points: float) -> None:
    at = 100 * MS_PER_DAY
    assert RULES.score(0, [(at - int(age_days * MS_PER_DAY), "demo_request")], at) == points


@pytest.mark.parametrize(("score", "band"), [
    (0, "0-20"), (19.999, "0-20"), (20, "20-40"), (59.9, "40-60"), (60, "60+"), (500, "60+"),
])
def test_bands(score: float, band: str) -> None:
    assert RULES.band(score) == band


def test_rules_file_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yml"
    bad.write_text("half_life_days: 0\nhot_threshold: 1\nband_edges: [1]\n"
                   "histogram_buckets: [1]\nengagement: {email_open: 1}\n")
    with pytest.raises(ValueError, match=r"rules\.yml.*half_life_days"):
        load_rules(bad)


HISTORY = [
    ev("lead.created", "2026-03-01T00:00:00Z", lead_id="L", source="Web", industry="Software",
       job_title="CTO"),
    ev("lead.engaged", "2026-03-02T00:00:00Z", lead_id="L", action="email_open"),
    ev("lead.engaged", "2026-03-05T00:00:00Z", lead_id="L", action="demo_request"),
    ev("lead.converted", "2026-03-06T00:00:00Z", lead_id="L", deal_id="D"),
    ev("lead.engaged", "2026-03-07T00:00:00Z", lead_id="L", action="webinar"),
    ev("lead.disqualified", "2026-03-08T00:00:00Z", lead_id="L"),
]


def _fold(events: list) -> LeadState:
    state = LeadState("L")
    for event in events:
        state = apply_lead_event(state, event)
    return state


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(range(len(HISTORY))), min_size=1, max_size=10))
def test_state_depends_only_on_the_set_of_events(indices: list[int]) -> None:
    assert _fold([HISTORY[i] for i in indices]) == _fold(
        [HISTORY[i] for i in sorted(set(indices))])


def _day(i: int) -> int:
    return UTC_CALENDAR.day_of(ms_from_datetime(HISTORY[i].time))


def test_converted_lead_counts_in_its_band_at_conversion_time() -> None:
    state = _fold(HISTORY)
    at = ms_from_datetime(HISTORY[3].time)
    score = 35 + 1 * 0.5 ** (4 / 30) + 25 * 0.5 ** (1 / 30)
    assert RULES.score(35, [(ms_from_datetime(HISTORY[1].time), "email_open"),
                            (ms_from_datetime(HISTORY[2].time), "demo_request")], at) == score
    assert lead_contributions(state, RULES) == {
        ("e", "Web", _day(0)): (1, 0, 0),
        ("e", "Web", _day(3)): (0, 1, 0),
        ("h", "60+", _day(3)): (1, 1),
    }
    assert score_inputs(state, RULES) is None


def test_open_lead_turns_hot_at_the_engagement_that_crosses() -> None:
    state = _fold(HISTORY[:3])
    assert hot_crossings(state, RULES) == [(ms_from_datetime(HISTORY[2].time), HISTORY[2].id)]
    inputs = score_inputs(state, RULES)
    assert inputs is not None and inputs.fit == 35
    assert inputs.hot_since_ms == ms_from_datetime(HISTORY[2].time)
    assert lead_contributions(state, RULES) == {("e", "Web", _day(0)): (1, 0, 0)}


def test_fit_alone_over_the_threshold_is_hot_from_creation() -> None:
    created = ev("lead.created", "2026-03-01T00:00:00Z", lead_id="M", source="Web",
                 industry="Software", company_size=5000, job_title="CEO")
    state = apply_lead_event(LeadState("M"), created)
    assert hot_crossings(state, RULES) == [(ms_from_datetime(created.time), created.id)]


def _reference_scores(leads: list[ScoreInputs], at: int) -> tuple[list[int], float, int]:
    """Bucket counts (non-cumulative), sum and hot count of the reference's scores."""
    rules = yaml.safe_load(DEFAULT_RULES_PATH.read_text())
    scores = [_score(rules, Fraction(lead.fit), list(lead.engagements), at) for lead in leads]
    bounds = rules["histogram_buckets"]
    counts = [sum(1 for s in scores if s <= bound and (i == 0 or s > bounds[i - 1]))
              for i, bound in enumerate(bounds)]
    counts.append(sum(1 for s in scores if s > bounds[-1]))
    return counts, sum(scores), sum(1 for s in scores if s >= rules["hot_threshold"])


def test_live_scores_from_kept_terms_equal_the_reference_as_t_moves_and_leads_change(
        ) -> None:
    """Open leads scored at several T with one set of kept terms (each lead's points
    decayed to its last engagement, then to T): the histogram and the hot count equal
    the reference's scores, replayed engagement by engagement, exactly, and the sum to
    1e-9; a lead changed (a new object) is read again, and a lead with an engagement
    after T (a wall clock behind the events) counts only what came before T."""
    rng = random.Random(8)
    actions = sorted(RULES.engagement)
    start = 20_000 * MS_PER_DAY
    leads = [ScoreInputs("Web", float(rng.choice((0, 5, 15, 30, 45))), tuple(sorted(
        (start + rng.randrange(40 * MS_PER_DAY), rng.choice(actions))
        for _ in range(rng.randrange(5)))), None) for _ in range(300)]
    kept: LeadTerms = {}
    config = ReportConfig(specs=(), stages=(), probability={}, scoring=RULES)
    for step, at in enumerate(start + day * MS_PER_DAY for day in (41, 43, 60, 61, 90, 30)):
        if step == 2:
            leads[0] = ScoreInputs("Web", 20.0, ((at - MS_PER_DAY, actions[0]),), None)
        kpis = lead_score_kpis(Snapshot(open_leads=leads), config, at, kept)
        assert kpis is not None
        counts, total, hot = _reference_scores(leads, at)
        assert list(kpis.counts) == counts and kpis.hot == hot, at
        assert kpis.score_sum == pytest.approx(total, rel=1e-9)
        assert sum(1 for lead in leads if id(lead) in kept) == len(leads)
    assert any(engaged > at for lead in leads for engaged, _ in lead.engagements)


def test_the_book_hands_over_the_same_open_leads_list_until_a_lead_changes() -> None:
    book = LeadBook(RULES)
    book.note(0, _fold(HISTORY[:1]))

    def listed(partitions: frozenset[int] = frozenset({0})) -> list[ScoreInputs]:
        snap = Snapshot()
        book.contribute(snap, partitions)
        return snap.open_leads

    first = listed()
    assert len(first) == 1 and listed() is first
    assert listed(frozenset({1})) == [] and listed() is not first
    again = listed()
    book.note(0, _fold(HISTORY[:2]))
    changed = listed()
    assert changed is not again and changed[0] != again[0]
    book.note(0, _fold([*HISTORY[:2], HISTORY[3]]))
    assert listed() == []
