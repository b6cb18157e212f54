"""Every setting of Pipeline Pulse, read from ``PULSE_*`` environment variables."""

from __future__ import annotations

__all__ = ["DEFAULT_STAGES", "Clock", "Settings", "StageConfig", "contract_rules",
           "organisation_calendar", "pricing", "report_config", "worker_env"]

import json
import os
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stream_app.events.codec import ContractRules
from stream_app.events.routing import ROUTES
from stream_app.ingest.access import parse_tokens
from stream_app.kpi.calendar import Calendar
from stream_app.kpi.forecast import ForecastSettings
from stream_app.kpi.money import Pricing
from stream_app.kpi.report import ReportConfig
from stream_app.kpi.scoring import ScoringRules
from stream_app.kpi.windows import window_specs

Clock = Literal["wall", "event"]


class StageConfig(BaseModel):
    """One open pipeline stage, in pipeline order, with its win probability (0..1)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64)
    probability: Decimal = Field(ge=0, le=1)


DEFAULT_STAGES: tuple[StageConfig, ...] = (
    StageConfig(name="Prospecting", probability=Decimal("0.10")),
    StageConfig(name="Qualification", probability=Decimal("0.20")),
    StageConfig(name="Engaging", probability=Decimal("0.40")),
    StageConfig(name="Proposal", probability=Decimal("0.60")),
    StageConfig(name="Negotiation", probability=Decimal("0.80")),
)


def _json_or(text: str, opener: str) -> Any | None:
    """``text`` decoded as JSON when it starts with ``opener``; None otherwise."""
    if not text.strip().startswith(opener):
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"expected {what}, got {item!r}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def _typed_form(opener: str, plain: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A parser of a variable's text: JSON when it starts with ``opener``, else
    ``plain(text)``; values that are not text pass unchanged."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        decoded = _json_or(value, opener)
        return plain(value) if decoded is None else decoded

    return parse


#: ``30,90`` or ``[30, 90]`` -> a list.
parse_list = _typed_form("[", lambda text: [p.strip() for p in text.split(",") if p.strip()])
#: ``USD=1,EUR=1.08`` or ``{"USD": "1", "EUR": "1.08"}`` -> a dict.
parse_map = _typed_form("{", lambda text: dict(_pairs(text, "CODE=RATE")))
#: ``Prospecting=0.1,Proposal=0.6`` or a JSON list of {name, probability}.
parse_stages = _typed_form("[", lambda text: [
    {"name": name, "probability": p} for name, p in _pairs(text, "NAME=PROBABILITY")])


class Settings(BaseSettings):
    """Frozen settings; each field is the env variable ``PULSE_<FIELD>`` (upper case).

    Lists and mappings take the forms people type as well as JSON:
    ``PULSE_WINDOWS_DAYS=30,90``, ``PULSE_FX_RATES=USD=1,EUR=1.08``,
    ``PULSE_STAGES=Prospecting=0.1,Proposal=0.6`` (or ``[30, 90]``,
    ``{"USD": "1", "EUR": "1.08"}``, ``[{"name": ..., "probability": ...}]``).
    """

    model_config = SettingsConfigDict(env_prefix="PULSE_", frozen=True, extra="ignore")

    app_id: str = Field("pipeline-pulse", description="Faust application id (consumer group).")
    kafka_bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset starts the embedded Tansu broker."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for SSL / SASL_SSL.")
    redis_url: SecretStr | None = Field(
        None, description="redis://...; unset starts the embedded redis-server."
    )
    topic_deals: str = "crm.deals"
    topic_customers: str = "crm.customers"
    topic_quotas: str = Field("crm.quotas", description="quota.set events, keyed by owner_id "
                              "(created with unlimited retention).")
    topic_leads: str = Field("crm.leads", description="lead.* events, keyed by lead_id.")
    topic_activities: str = Field("crm.activities", description="activity.logged events "
                                  "(calls, emails, meetings), keyed by owner_id.")
    topic_reps: str = Field("crm.reps", description="rep.updated events (the roster: owner "
                            "ids to names and teams), keyed by owner_id.")
    topic_lead_scores: str = Field(
        "crm.lead-scores", description="Published lead.hot events (a lead crossed the hot "
        "score), keyed by lead_id, for the CRM to act on."
    )
    topic_dead_letters: str = "crm.dead-letters"
    topic_account_wins: str = Field(
        "pipeline-pulse.account-wins",
        description="Internal re-key topic: won deals keyed by account_id.",
    )
    topic_owner_wins: str = Field(
        "pipeline-pulse.owner-wins",
        description="Internal re-key topic: won deals keyed by owner_id.",
    )
    topic_forecast_deals: str = Field(
        "pipeline-pulse.forecast-deals",
        description="Internal re-key topic: every deal event under one key, so one "
                    "partition (one worker) holds every deal the forecast learns from.",
    )
    partitions: int = Field(4, ge=1, le=256, description="Partitions of every topic.")
    replication_factor: int = Field(
        1, ge=1, le=16, description="Replication factor of the topics the worker creates "
        "(CRM, internal and changelog topics); 3 on a production cluster.")
    min_insync_replicas: int | None = Field(
        None, ge=1, le=16, description="min.insync.replicas of the topics the worker creates "
        "(unset: the broker's default); with acks=all, 2 of 3 replicas is the usual choice.")
    web_host: str = Field("127.0.0.1", description="Bind address of /metrics.")
    web_port: int = Field(6066, ge=0, le=65535)
    clock: Clock = Field(
        "wall", description="wall: as-of time is now; event: the latest event time seen."
    )
    timezone: str = Field(
        "UTC", min_length=1, description="IANA time zone of the sales organisation (such as "
        "Europe/Oslo): the days, months, quarters and trailing windows of every KPI are its "
        "local dates. Changing it needs a rebuild of the state (see README).")
    fiscal_year_start_month: int = Field(
        1, ge=1, le=12, description="First month of the fiscal year (1 = January). Quarters "
        "are fiscal and named after the calendar year in which the fiscal year ends: with 2, "
        "2027-Q1 is February to April 2026.")
    windows_days: Annotated[tuple[int, ...], NoDecode] = Field(
        (30, 90), description="Trailing windows, in days.")
    stages: Annotated[tuple[StageConfig, ...], NoDecode] = Field(
        DEFAULT_STAGES, description="Open stages in pipeline order, each with its win "
        "probability.")
    reporting_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    fx_rates: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=lambda: {
            "USD": Decimal("1"),
            "EUR": Decimal("1.08"),
            "GBP": Decimal("1.27"),
        },
        description="Units of the reporting currency per unit of each accepted currency.",
    )
    max_teams: int = Field(
        50, ge=1, le=10_000,
        description="Teams with their own series, first come first served across workers; "
        "later teams are summed into team=\"other\".",
    )
    max_owners: int = Field(
        200, ge=1, le=100_000, description="Owners (reps) with their own attainment series "
        "(as max_teams)."
    )
    max_sources: int = Field(
        30, ge=1, le=10_000, description="Lead sources with their own series (as max_teams)."
    )
    max_products: int = Field(
        30, ge=1, le=10_000, description="Products with their own series (as max_teams)."
    )
    lead_scoring_file: str | None = Field(
        None, description="YAML scoring rules; unset uses the documented default "
        "(stream_app/kpi/lead_scoring_default.yml)."
    )
    hot_lead_wait_hours: float = Field(
        24.0, gt=0, description="A hot lead still open this long after it turned hot counts "
        "in pulse_hot_leads_waiting."
    )
    max_competitors: int = Field(
        30, ge=1, le=10_000, description="Competitors with their own series (as max_teams)."
    )
    forecast_window_days: int = Field(
        365, ge=30, le=3650, description="Trailing days of stage entries the forecast "
        "learns each stage's chance to win from.")
    forecast_rate_days: int = Field(
        90, ge=7, le=3650, description="Trailing days whose deal creations give the "
        "forecast's rate of deals not created yet.")
    forecast_alert_margin: float = Field(
        0.1, ge=0, lt=1, description="PulseForecastBelowQuota fires after mid-period when "
        "the forecast is below (1 - this) x the quota; exported as "
        "pulse_forecast_alert_margin_ratio for the rule to read.")
    forecast_wait_seconds: float = Field(
        0.5, ge=0, le=60, description="How long a scrape waits for the forecast of the "
        "current state, computed beside the scrapes; past it the scrape exports the last "
        "forecast computed with pulse_forecast_stale 1, and the next scrape the new one. "
        "Keep it well under the scrape timeout.")
    forecast_process: bool = Field(
        True, description="Compute the forecast in a child Python process (started by the "
        "worker owning the forecast partition, stopped with it or when the partition moves) "
        "instead of a thread of the worker: it then runs on another core instead of sharing "
        "the interpreter with the folds and the scrapes.")
    forecast_expected_close: bool = Field(
        True, description="Whether an open deal's expected close (deal.created or "
        "deal.updated) shifts its chance to win: counted only against the past stints "
        "whose own expected close stood alike (passed, inside or after the period), when "
        "at least 30 did at that age. Turn off when the CRM's dates are not kept.")
    stuck_days: int = Field(
        30, ge=1, description="An open deal whose current stage began more than this many "
        "days (of PULSE_TIMEZONE) before T's day is stuck."
    )
    clv_max_years: float = Field(
        10.0, gt=0, description="Cap of the customer lifespan in CLV (used as is when no "
        "customer churned in the trailing 365 days)."
    )
    dedup_ttl_seconds: int = Field(7 * 86400, ge=60)
    late_grace_days: float = Field(
        7.0, gt=0,
        description="Events older than their partition's latest event time minus this are "
        "still applied and counted in pulse_events_late_total.",
    )
    max_event_bytes: int = Field(64 * 1024, ge=512)
    batch_max_events: int = Field(
        1000, ge=1, description="Events folded per batch (one Redis round trip, coalesced writes)."
    )
    batch_within_seconds: float = Field(0.05, gt=0, description="Longest wait to fill a batch.")
    fetch_max_wait_seconds: float | None = Field(
        None, gt=0, le=30, description="Longest a fetch of the source topics waits for "
        "records. Unset: 0.1 s when the worker starts its own embedded Tansu (and in the "
        "demo), Faust's 1.5 s otherwise. Tansu holds a fetch for half of it even when "
        "records arrive (each new event ~1.3 s late at 1.5 s), but at 0.1 s an idle worker "
        "and its Tansu spend ~20% of a core polling, against ~6% at 1.5 s.")
    table_standby_replicas: int = Field(0, ge=0)
    commit_interval_seconds: float = Field(1.0, gt=0)
    session_timeout_seconds: float = Field(
        10.0, ge=1, description="Consumer-group session timeout; Tansu waits half of it per join."
    )
    group_instance_id: str | None = Field(
        None, min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$",
        description="Static group membership (Kafka's group.instance.id): a worker restarted "
        "with the same id takes its partitions back without waiting for its dead "
        "predecessor's session. A stable name per worker (a StatefulSet's pod name), never "
        "shared by two running workers; a worker stopped for good keeps its partitions "
        "unowned for a session timeout. Unset: dynamic membership.")
    recovery_stall_seconds: float = Field(
        180.0, gt=0,
        description="A table recovery that restores nothing for this long stops the worker "
        "with an error instead of hanging.",
    )
    data_dir: str | None = Field(
        None, description="Writable directory for the worker's local files (Faust's data "
        "directory); unset: <app id>-data in the working directory.")
    checkpoint_interval_seconds: float = Field(
        60.0, ge=0, description="How often a worker with PULSE_DATA_DIR set writes local "
        "checkpoints of the table partitions it exports, so a restart reads only the "
        "changelog written since; 0: never (a restart reads every changelog from the "
        "start).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object a line (time, level, logger, message, "
        "worker, topic and partition where relevant), for log shippers.")
    startup_timeout_seconds: float = Field(
        300.0, gt=0, description="How long a starting worker retries an unreachable Kafka "
        "(capped backoff) before it exits with code 3 (Redis: at most 10 s, then it starts "
        "without it).")
    require_redis_at_start: bool = Field(
        False, description="true: a starting worker waits for Redis as for Kafka (until "
        "PULSE_STARTUP_TIMEOUT_SECONDS, then exit 3); false: it waits 10 s, then starts "
        "without it (deduplication by id resumes when Redis answers).")
    liveness_max_loop_lag_seconds: float = Field(
        10.0, gt=0, description="/livez answers 503 when the event loop ran this late.")

    ingest_host: str = Field("127.0.0.1", description="Address `stream-app ingest` binds "
                             "(0.0.0.0 in a container).")
    ingest_port: int = Field(8080, ge=1, le=65535, description="Port of the ingest gateway.")
    ingest_tokens: SecretStr | None = Field(
        None, description="Bearer tokens the gateway accepts, name=token pairs separated by "
        "commas (the name labels metrics and the rate limit; tokens of 16+ characters, "
        "never logged). Required by `stream-app ingest`.")
    ingest_max_body_bytes: int = Field(1024 * 1024, ge=1024,
                                       description="Largest request body (413 above).")
    ingest_max_events_per_request: int = Field(
        500, ge=1, le=100_000, description="Most events in one batched request (413 above).")
    ingest_max_json_depth: int = Field(32, ge=4, le=1000,
                                       description="Deepest JSON nesting accepted (400 above).")
    ingest_rate_per_second: float = Field(
        50.0, gt=0, description="Requests a second per token, sustained (429 above).")
    ingest_rate_burst: int = Field(100, ge=1, description="Requests a token may send at once.")
    ingest_produce_timeout_seconds: float = Field(
        10.0, gt=0, description="How long a request waits for the broker's acknowledgement "
        "before it is answered 503 (Retry-After).")
    ingest_read_timeout_seconds: float = Field(
        10.0, gt=0, description="How long a client may take to send its body (408 after).")
    ingest_retry_after_seconds: int = Field(
        5, ge=1, description="Retry-After of a 503 (the broker did not acknowledge).")
    ingest_pipedrive_mapping: str | None = Field(
        None, description="Mapping file (YAML) of POST /webhooks/pipedrive: stage ids, owner "
        "teams, default currency; unset: the route answers 404.")
    ingest_salesforce_mapping: str | None = Field(
        None, description="Mapping file (YAML) of POST /webhooks/salesforce (Opportunity "
        "change events): StageName values, won and lost stages, owner teams, default "
        "currency; unset: the route answers 404.")
    ingest_hubspot_mapping: str | None = Field(
        None, description="Mapping file (YAML) of POST /webhooks/hubspot: dealstage ids, won "
        "and lost stages, owner teams, default currency; unset: the route answers 404.")
    ingest_hubspot_client_secret: SecretStr | None = Field(
        None, description="The HubSpot app's client secret: checks X-HubSpot-Signature-v3 "
        "(required with PULSE_INGEST_HUBSPOT_MAPPING).")
    ingest_hubspot_api_token: SecretStr | None = Field(
        None, description="A HubSpot private app token (scope crm.objects.deals.read): the "
        "gateway reads what a webhook does not say (required with the mapping).")
    ingest_hubspot_api_url: str = Field(
        "https://api.hubapi.com", description="Base URL of HubSpot's API.")
    ingest_public_url: str | None = Field(
        None, description="The gateway's URL as the CRM calls it (https://host[:port]), "
        "when a proxy stands in front: HubSpot signs that URL. Unset: the request's own.")

    @field_validator("ingest_tokens")
    @classmethod
    def _tokens_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_tokens(value.get_secret_value())
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        Calendar(value)
        return value

    _lists = field_validator("windows_days", mode="before")(parse_list)
    _maps = field_validator("fx_rates", mode="before")(parse_map)
    _stage_list = field_validator("stages", mode="before")(parse_stages)

    @field_validator("windows_days")
    @classmethod
    def _positive_windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(days < 1 for days in value):
            raise ValueError("windows_days must list positive day counts")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.reporting_currency not in self.fx_rates:
            raise ValueError(f"PULSE_FX_RATES must give a rate for the reporting currency "
                             f"(PULSE_REPORTING_CURRENCY={self.reporting_currency})")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names) or not names:
            raise ValueError("PULSE_STAGES must be a non-empty list of distinct names")
        return self

    def label_cap(self, label: str) -> int:
        """The cap on distinct values of a capped label (team, source, product, competitor)."""
        caps = {"team": self.max_teams, "owner": self.max_owners, "source": self.max_sources,
                "product": self.max_products, "competitor": self.max_competitors}
        return caps[label]

    @property
    def source_topics(self) -> tuple[str, ...]:
        """The CRM topics the workers read (not the internal re-key topics)."""
        return tuple(getattr(self, route.topic_setting) for route in ROUTES.values())

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Stage names in pipeline order."""
        return tuple(stage.name for stage in self.stages)

    @property
    def stage_probabilities(self) -> dict[str, Decimal]:
        """Win probability of each stage."""
        return {stage.name: stage.probability for stage in self.stages}


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment plus the PULSE_* variables a worker subprocess needs
    to share ``settings``' servers, topics, app id, clock and timings."""
    env = dict(os.environ)
    env.update({
        "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "PULSE_REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
        "PULSE_WEB_PORT": str(settings.web_port),
        "PULSE_WEB_HOST": settings.web_host,
        "PULSE_CLOCK": settings.clock,
        "PULSE_TIMEZONE": settings.timezone,
        "PULSE_FISCAL_YEAR_START_MONTH": str(settings.fiscal_year_start_month),
        "PULSE_PARTITIONS": str(settings.partitions),
        "PULSE_APP_ID": settings.app_id,
        "PULSE_SESSION_TIMEOUT_SECONDS": str(settings.session_timeout_seconds),
        "PULSE_COMMIT_INTERVAL_SECONDS": str(settings.commit_interval_seconds),
        **({"PULSE_FETCH_MAX_WAIT_SECONDS": str(settings.fetch_max_wait_seconds)}
           if settings.fetch_max_wait_seconds is not None else {}),
        **extra,
    })
    return env


def contract_rules(settings: Settings) -> ContractRules:
    """What the event contract admits under ``settings``: currencies with a rate, the
    configured stages, the largest message."""
    return ContractRules(currencies=frozenset(settings.fx_rates),
                         stages=frozenset(settings.stage_names),
                         max_event_bytes=settings.max_event_bytes)


def report_config(settings: Settings, scoring: ScoringRules | None) -> ReportConfig:
    """How reports are built under ``settings`` (windows, stages, thresholds, caps) with
    the lead ``scoring`` rules."""
    return ReportConfig(
        specs=window_specs(settings.windows_days),
        stages=settings.stage_names,
        probability=settings.stage_probabilities,
        stuck_days=settings.stuck_days,
        clv_max_years=settings.clv_max_years,
        scoring=scoring,
        hot_wait_ms=round(settings.hot_lead_wait_hours * 3_600_000),
        calendar=organisation_calendar(settings),
        forecast=ForecastSettings(settings.forecast_window_days, settings.forecast_rate_days,
                                  settings.forecast_alert_margin,
                                  settings.forecast_expected_close),
    )


def organisation_calendar(settings: Settings) -> Calendar:
    """The days, months and fiscal quarters of the organisation under ``settings``."""
    return Calendar(settings.timezone, settings.fiscal_year_start_month)


def pricing(settings: Settings) -> Pricing:
    """Currency conversion and stage probabilities under ``settings``."""
    return Pricing(dict(settings.fx_rates), settings.stage_probabilities)
