"""``stream-app``: run workers, the demo, and move CRM data into Kafka.

Every setting comes from ``PULSE_*`` environment variables (see README,
"Configuration"); without PULSE_KAFKA_BOOTSTRAP / PULSE_REDIS_URL the worker
starts the embedded broker and Redis itself and stops them when it stops.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from stream_app.config import Settings

SETTINGS_HELP = """\
settings:
  Every setting is a PULSE_* environment variable, in groups: Kafka, Redis, Topics,
  KPIs, Label caps, Operations, Ingest gateway. `stream-app config` prints each
  effective value, where it came from (environment or default) and its group; secrets
  are masked. Lists and maps take 30,90 / USD=1,EUR=1.08 / Prospecting=0.1,Proposal=0.6
  (or JSON). An invalid setting stops a command with one line per variable and exit
  code 2.
"""

EPILOG = SETTINGS_HELP + """
environment (the ones most often set):
  PULSE_KAFKA_BOOTSTRAP   host:port of Kafka (unset: embedded Tansu broker)
  PULSE_REDIS_URL         redis://host:port/db (unset: embedded redis-server)
  PULSE_WEB_PORT          port of /metrics (default 6066), PULSE_WEB_HOST (127.0.0.1)
  PULSE_CLOCK             wall (live) or event (replays: as-of = latest event time)
  ... all of them: `stream-app config`, and the Configuration table in README.md

examples:
  stream-app demo                                  # everything embedded, live table
  stream-app generate --months 12 --out crm.jsonl  # a seeded realistic stream
  stream-app import maven-crm ../shared/datasets/maven-crm --out maven.jsonl
  stream-app import x-education ../shared/datasets/x-education-leads --out leads.jsonl
  stream-app import opportunities export.csv --mapping salesforce-opportunity --out sf.jsonl
  stream-app replay maven.jsonl                    # into the CRM topics
  PULSE_CLOCK=event stream-app worker              # a worker for replays
"""


OPPORTUNITIES_HELP = """\
One row per opportunity in its current state becomes deal.created (first configured
stage, at the created date), deal.stage_changed to the row's stage when it is open
(at the stage date column, else at creation), deal.won / deal.lost at the close date
when the row's stage is a won / lost stage. Event ids derive from the deal id, so
re-importing the same export sends nothing new. Rows that cannot be used are
skipped and listed with the row number, the column and the reason.

presets (stream_app/importers/presets/, examples in docs/examples/):
  salesforce-opportunity  Salesforce Opportunities report, CSV, en_US dates
  hubspot-deals           HubSpot deals export, CSV

a mapping file (YAML; copy a preset to start):
  name, source (CloudEvent source), id_prefix
  columns: deal_id, owner_id, amount, stage, created (required);
           closed, account_id, team, currency, source, product, competitor,
           lost_reason, stage_entered (optional)
  default_team, default_currency (when the column is absent or empty)
  date_formats (strptime formats, tried in order), timezone (IANA, for dates without
  an offset), decimal_separator ("." or ","), won_stages, lost_stages,
  stage_map (CRM stage -> configured stage; PULSE_STAGES)
"""


INGEST_HELP = """\
Serve POST /events on PULSE_INGEST_HOST:PULSE_INGEST_PORT (127.0.0.1:8080): CloudEvents
over HTTP in structured (Content-Type application/cloudevents+json), batched
(application/cloudevents-batch+json, a JSON array) or binary mode (ce-* headers, an
application/json body holding the data). Every event is checked by the worker's
contract; the answer is 202 {"accepted": n} only once the broker acknowledged every
event of the request (acks=all).

answers:
  202  every event is on the broker
  400  invalid events (each with its index, id, field, reason; nothing was sent),
       or a body that is not JSON / nested deeper than PULSE_INGEST_MAX_JSON_DEPTH
  401  no or unknown bearer token      408  body not sent within the read timeout
  413  body or batch over its limit    415  not a CloudEvents content mode
  429  over the token's rate (Retry-After)
  503  the broker did not acknowledge in time (Retry-After): send the same request
       again; events that did land are dropped by the worker as repeats

CRM webhooks (each route exists once its mapping file is set):
  POST /webhooks/pipedrive   Pipedrive webhooks v2 on deals (PULSE_INGEST_PIPEDRIVE_MAPPING;
                             example: deploy/ingest/pipedrive.example.yml)
  POST /webhooks/salesforce  Opportunity change events of Change Data Capture, one or a
                             JSON array (PULSE_INGEST_SALESFORCE_MAPPING; example:
                             deploy/ingest/salesforce.example.yml)
  POST /webhooks/hubspot     HubSpot deal webhooks, signed (X-HubSpot-Signature-v3; no
                             token); what they do not say is read from HubSpot's API as
                             of the event (PULSE_INGEST_HUBSPOT_MAPPING, _CLIENT_SECRET,
                             _API_TOKEN; example: deploy/ingest/hubspot.example.yml)
  200/202 as above; 422 for a stage or owner the mapping lacks (the CRM retries; add it
  and restart); 503 roster_loading while the gateway reads the roster topic at start.
  An owner's team: the roster (rep.updated events on PULSE_TOPIC_REPS, read from the
  beginning and followed), else the mapping's owners, else its default_team.
  Reopened deals become deal.reopened, deletions deal.deleted (restores deal.restored),
  owner changes deal.updated; currency changes, HubSpot merges and Salesforce gap events
  are counted in pulse_ingest_changes_ignored_total and logged, not modelled.

Needs PULSE_KAFKA_BOOTSTRAP and PULSE_INGEST_TOKENS ("name=token,name=token"; send
Authorization: Bearer <token>, or HTTP Basic with the token's name and the token).
/healthz and /metrics need no token. Stop with Ctrl-C or SIGTERM (requests in flight
are answered first).
"""

#: Exit code of a command stopped by invalid settings.
EXIT_INVALID_SETTINGS = 2


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        from stream_app.settings_report import invalid_setting_lines

        lines = invalid_setting_lines(exc)
        print(f"stream-app: {len(lines)} invalid setting{'s' if len(lines) > 1 else ''} "
              "(see `stream-app config --help`):", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_SETTINGS) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-app",
        description="Pipeline Pulse: live sales KPIs from CRM CloudEvents on Kafka.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, epilog=SETTINGS_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    command("worker", help="run a Faust worker (several may run; they share partitions)",
            description="Run one worker. It consumes the CRM topics, keeps state in "
            "changelog-backed tables and serves /metrics, /healthz, /livez and /readyz. "
            "Kafka not reachable at start is retried until PULSE_STARTUP_TIMEOUT_SECONDS "
            "(then exit 3); Redis is waited for 10 s, then the worker starts without it. "
            "Exit codes: 0 stopped, 2 invalid settings or state lost, 3 Kafka never became "
            "reachable. Stop it with "
            "Ctrl-C or SIGTERM (the batch in hand finishes and is committed first).")
    command("ingest", help="serve the HTTP gateway that puts CRM events on the topics",
            description=INGEST_HELP)
    config = command("config", help="print the effective settings and where each came from",
                     description="Every PULSE_* setting with its effective value (secrets "
                     "masked), its source (environment or default) and its group.")
    config.add_argument("--json", action="store_true", help="one JSON object per setting")
    servers = command("servers", help="start the embedded broker and Redis and print how to "
                      "use them", description="Start Tansu and redis-server on free loopback "
                      "ports, print the PULSE_* variables to reach them, and wait for Ctrl-C "
                      "(which stops both). Tansu keeps its topics in memory only: they are "
                      "gone when it stops.")
    servers.add_argument("--log-dir", type=Path, default=None,
                         help="write the servers' output to broker.log and redis.log in this "
                         "directory (created if missing); without it their output is "
                         "discarded")
    command("topics", help="create the CRM and internal topics if they are missing")
    schemas = sub.add_parser("schemas", help="regenerate schemas/ from the pydantic models")
    schemas.add_argument("--check", action="store_true",
                         help="only report drift (exit 1 when a file differs)")
    schemas.add_argument("--dir", type=Path, default=Path("schemas"))

    demo = command("demo", help="embedded servers + worker + history + live trickle",
                          description="Start everything embedded, replay months of generated "
                          "history, then trickle live events and show the KPIs. Ctrl-C stops "
                          "every process it started.")
    demo.add_argument("--months", type=int, default=12, help="months of history (default 12)")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds of live trickle (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=3.0, help="live events per second (default 3)")
    demo.add_argument("--seed", type=int, default=7)

    gen = sub.add_parser("generate", help="write a seeded, realistic CRM stream as JSON lines")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--months", type=int, default=12, help="months of history (default 12)")
    gen.add_argument("--end", default=None,
                     help="RFC 3339 end of the stream (default: now, UTC)")
    gen.add_argument("--deals-per-day", type=float, default=12.0)
    gen.add_argument("--teams", default="Central,East,West,EMEA", help="comma-separated")
    gen.add_argument("--expected-close-error-days", type=float, default=0.0, metavar="SD",
                     help="make the CRM's expected closes track the real ones: a winner's "
                     "misses its close by a normal error of SD days, and each one that "
                     "passes with the deal open is pushed (deal.updated); default 0: every "
                     "expected close is the creation + 60 days")
    gen.add_argument("--plan-update-probability", type=float, default=0.0, metavar="P",
                     help="share of deals whose forecast category the CRM sets "
                     "(deal.updated; also moving the expected close when "
                     "--expected-close-error-days is 0); default 0")
    gen.add_argument("--out", type=Path, default=None, help="file (default: standard output)")

    rep = command("replay", help="send a JSON-lines file of CloudEvents to the topics",
                         description="Each line is one CloudEvent; deal.* go to the deal topic "
                         "keyed by deal_id, customer.* to the customer topic keyed by "
                         "account_id. Lines that cannot be routed are reported and skipped; "
                         "invalid events are sent and dead-lettered by the worker.")
    rep.add_argument("file", type=Path)
    rep.add_argument("--rate", type=float, default=None, help="events per second (default: max)")
    rep.add_argument("--no-progress", action="store_true")

    dash = command(
        "dashboards", help="write the Grafana dashboards (JSON) generated from "
        "stream_app/tools/dashboards.py", description="Grafana dashboards as code: writes "
        "one JSON file per dashboard; with --check, exits 1 if the files differ instead.")
    dash.add_argument("--dir", type=Path, default=Path("deploy/grafana/dashboards"),
                      help="target folder (deploy/grafana/dashboards)")
    dash.add_argument("--check", action="store_true", help="compare, do not write")

    manifests = command(
        "manifests", help="write deploy/kubernetes/generated/ (PrometheusRule, dashboard "
        "ConfigMaps) from the rules and the dashboards code", description="The generated "
        "part of the Kubernetes manifests: the Prometheus rules as one PrometheusRule and "
        "each dashboard as a ConfigMap for Grafana's sidecar; with --check, exits 1 if the "
        "files differ instead.")
    manifests.add_argument("--dir", type=Path, default=Path("deploy/kubernetes/generated"))
    manifests.add_argument("--rules", type=Path, default=Path("deploy/prometheus/rules"),
                           help="the Prometheus rule files (deploy/prometheus/rules)")
    manifests.add_argument("--check", action="store_true", help="compare, do not write")

    imp = command("import", help="convert a CRM export to CloudEvents JSON lines")
    imp_sub = imp.add_subparsers(dest="format", required=True, metavar="FORMAT")
    maven = imp_sub.add_parser("maven-crm", help="Maven Analytics CRM Sales Opportunities folder")
    maven.add_argument("folder", type=Path, help="folder with sales_pipeline.csv, products.csv, "
                       "sales_teams.csv")
    maven.add_argument("--out", type=Path, default=None, help="file (default: standard output)")
    xed = imp_sub.add_parser(
        "x-education", help="X Education leads (Leads.csv): lead events with synthetic times",
        description="lead.created per row (source = Lead Source), one site_visit per "
        "TotalVisits, Last Activity as an engagement when it maps to one, lead.converted "
        "7 days after creation when Converted is 1. Times are synthetic: row k is created "
        "at 2025-01-01 + 55k minutes.")
    xed.add_argument("path", type=Path, help="leads.csv or the folder holding it")
    xed.add_argument("--out", type=Path, default=None, help="file (default: standard output)")
    olist = imp_sub.add_parser(
        "olist", help="Olist marketing funnel: leads, closed deals and their dates",
        description="lead.created per marketing-qualified lead at first contact; per "
        "closed deal: deal.created at first contact, lead.converted and deal.won at "
        "won_date, amount = declared monthly revenue. Add the currency to PULSE_FX_RATES.")
    olist.add_argument("folder", type=Path, help="folder with marketing_qualified_leads.csv "
                       "and closed_deals.csv")
    olist.add_argument("--currency", default="BRL", help="currency of the amounts (BRL)")
    olist.add_argument("--out", type=Path, default=None, help="file (default: standard output)")
    opp = imp_sub.add_parser(
        "opportunities", help="any CRM's opportunity/deal export (CSV) through a column mapping",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=OPPORTUNITIES_HELP)
    opp.add_argument("path", type=Path, help="the CSV export (header row first, UTF-8)")
    opp.add_argument("--mapping", required=True, metavar="PRESET|FILE",
                     help="salesforce-opportunity, hubspot-deals, or a YAML mapping file")
    opp.add_argument("--out", type=Path, default=None, help="file (default: standard output)")
    telco = imp_sub.add_parser(
        "telco", help="IBM Telco churn: customers, tenure and churn as of a snapshot",
        description="Per customer a won deal tenure x 30 days before the snapshot; "
        "Churn = Yes churns 12 hours after the snapshot.")
    telco.add_argument("path", type=Path, help="telco_customer_churn.csv or its folder")
    telco.add_argument("--as-of", type=dt.datetime.fromisoformat,
                       default=dt.datetime(2026, 1, 15, tzinfo=dt.UTC),
                       help="snapshot time, ISO 8601 with offset (2026-01-15T00:00:00+00:00)")
    telco.add_argument("--out", type=Path, default=None, help="file (default: standard output)")
    roster = imp_sub.add_parser(
        "roster", help="a roster file (YAML: owner id -> name, team) as rep.updated events",
        description="reps: {<owner id>: {name: ..., team: ...}} -> one rep.updated per owner, "
        "at --as-of. Importing the same file again sends repeats (dropped); a changed entry "
        "is a new profile. Send the output with `stream-app replay`, or POST it to the "
        "ingest gateway's /events.")
    roster.add_argument("path", type=Path, help="the roster YAML file")
    roster.add_argument("--as-of", type=dt.datetime.fromisoformat, default=None,
                        help="when the profiles take effect, ISO 8601 with offset "
                        "(default: now)")
    roster.add_argument("--out", type=Path, default=None, help="file (default: standard output)")
    return parser


def _import(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Any]:
    stage = _settings().stage_names[0]
    if args.format == "maven-crm":
        from stream_app.importers.maven_crm import import_maven_crm

        return import_maven_crm(args.folder)
    if args.format == "x-education":
        from stream_app.importers.x_education import import_x_education

        return import_x_education(args.path)
    if args.format == "opportunities":
        from stream_app.importers.opportunities import (
            MappingError,
            import_opportunities,
            load_mapping,
        )

        try:
            return import_opportunities(args.path, load_mapping(args.mapping),
                                        _settings().stage_names)
        except (MappingError, OSError) as exc:
            raise SystemExit(f"stream-app import opportunities: {exc}") from None
    if args.format == "roster":
        from stream_app.importers.roster import RosterError, import_roster

        try:
            return import_roster(args.path, args.as_of or dt.datetime.now(dt.UTC))
        except RosterError as exc:
            raise SystemExit(f"stream-app import roster: {exc}") from None
    if args.format == "olist":
        from stream_app.importers.olist import import_olist

        return import_olist(args.folder, first_stage=stage, currency=args.currency)
    from stream_app.importers.telco import import_telco

    if args.as_of.tzinfo is None:
        raise SystemExit("--as-of needs a UTC offset, e.g. 2026-01-15T00:00:00+00:00")
    return import_telco(args.path, as_of=args.as_of, first_stage=stage)


def _write_jsonl(events: list[dict[str, Any]], out: Path | None) -> None:
    handle = out.open("w") if out else sys.stdout
    try:
        for event in events:
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")
    finally:
        if out:
            handle.close()


def _run_worker(settings: Settings) -> int:
    from stream_app.adapters.embedded import (
        EMBEDDED_FETCH_MAX_WAIT_SECONDS,
        EmbeddedServers,
        EmbeddedUnavailableError,
        start_embedded_broker,
        start_embedded_redis,
    )
    from stream_app.adapters.faust_app import PulseWorker
    from stream_app.adapters.faust_compat import faust_worker
    from stream_app.adapters.startup import (
        EXIT_DEPENDENCY_UNREACHABLE,
        favour_the_event_loop,
        wait_for_dependencies,
    )
    from stream_app.logs import WORKER_LOGGER, configure_logging, logging_config

    configure_logging(settings)
    favour_the_event_loop()
    say = logging.getLogger(WORKER_LOGGER)
    servers = EmbeddedServers()
    try:
        update: dict[str, object] = {}
        try:
            if not settings.kafka_bootstrap:
                update["kafka_bootstrap"] = start_embedded_broker(servers)
                if settings.fetch_max_wait_seconds is None:
                    update["fetch_max_wait_seconds"] = EMBEDDED_FETCH_MAX_WAIT_SECONDS
            if settings.redis_url is None:
                update["redis_url"] = SecretStr(start_embedded_redis(servers))
        except EmbeddedUnavailableError as exc:
            say.error("%s", exc)
            return EXIT_INVALID_SETTINGS
        if update:
            settings = settings.model_copy(update=update)
            say.info("embedded servers: kafka %s, redis %s", settings.kafka_bootstrap,
                     servers.redis_url or "configured")
        unreachable = asyncio.run(wait_for_dependencies(settings, say.warning))
        if unreachable is not None:
            say.error("%s; exiting", unreachable)
            return EXIT_DEPENDENCY_UNREACHABLE
        pulse = PulseWorker(settings)
        say.info("metrics: http://%s:%s/metrics (probes /livez, /readyz; progress /healthz)",
                 settings.web_host, settings.web_port)
        worker = faust_worker(pulse.app, settings.log_level, logging_config(settings))
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = int(exc.code or 0)
        else:
            code = 0
        if pulse.fatal is not None:
            say.critical("stopped: %s", pulse.fatal)
            return 2
        return code
    finally:
        servers.stop()


def _sync_files(files: dict[str, str], folder: Path, check: bool, what: str) -> int:
    """Write generated files (or, with ``check``, only list those that differ: exit 1)."""
    stale = []
    for name, text in files.items():
        target = folder / name
        if target.exists() and target.read_text() == text:
            continue
        stale.append(str(target))
        if not check:
            folder.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    verb = "differ" if check else "written"
    print("\n".join(f"{verb}: {path}" for path in stale) or f"{what} up to date",
          file=sys.stderr)
    return 1 if check and stale else 0


def _run_servers(log_dir: Path | None) -> int:
    from stream_app.adapters.embedded import (
        EmbeddedServers,
        start_embedded_broker,
        start_embedded_redis,
    )

    def log_of(name: str) -> str | None:
        return None if log_dir is None else str(log_dir / f"{name}.log")

    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedServers() as servers:
        start_embedded_broker(servers, log_of("broker"))
        start_embedded_redis(servers, log_of("redis"))
        print(f"export PULSE_KAFKA_BOOTSTRAP={servers.kafka_bootstrap}")
        print(f"export PULSE_REDIS_URL={servers.redis_url}", flush=True)
        if log_dir is not None:
            print(f"# logs: {log_of('broker')}, {log_of('redis')}", file=sys.stderr)
        print("# Ctrl-C stops both servers", file=sys.stderr)
        named = [("broker (Tansu)", servers.broker, log_of("broker")),
                 ("redis-server", servers.redis, log_of("redis"))]
        try:
            while all(proc is not None and proc.poll() is None for _, proc, _ in named):
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        for name, proc, log in named:
            if proc is not None and proc.poll() is not None:
                where = f"; see {log}" if log else " (run with --log-dir to keep its output)"
                print(f"the embedded {name} exited with code {proc.returncode}{where}",
                      file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stream-app`` console script."""
    from stream_app.adapters.embedded import EmbeddedUnavailableError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _dispatch(args)
    except EmbeddedUnavailableError as exc:
        print(f"stream-app {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID_SETTINGS


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "worker":
        return _run_worker(_settings())
    if args.command == "servers":
        return _run_servers(args.log_dir)
    if args.command == "ingest":
        from stream_app.ingest.gateway import run_gateway

        settings = _settings()
        missing = [name for name, value in (("PULSE_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
                                            ("PULSE_INGEST_TOKENS", settings.ingest_tokens))
                   if not value]
        if missing:
            print(f"stream-app ingest: set {' and '.join(missing)} (see `stream-app ingest "
                  "--help`)", file=sys.stderr)
            return EXIT_INVALID_SETTINGS
        from stream_app.ingest.gateway import vendor_mappings

        try:
            vendor_mappings(settings)
        except ValueError as exc:
            print(f"stream-app ingest: {exc}", file=sys.stderr)
            return EXIT_INVALID_SETTINGS
        return run_gateway(settings)
    if args.command == "config":
        from stream_app.settings_report import effective_settings, render_settings

        rows = effective_settings(_settings())
        if args.json:
            for row in rows:
                print(json.dumps({"group": row.group, "variable": row.variable,
                                  "value": row.value, "source": row.source,
                                  "description": row.description}))
        else:
            sys.stdout.write(render_settings(rows))
        return 0
    if args.command == "topics":
        from stream_app.adapters.kafka import ensure_topics

        asyncio.run(ensure_topics(_settings()))
        return 0
    if args.command == "schemas":
        from stream_app.events.schema_export import expected_files, write_files

        if args.check:
            drift = [rel for rel, text in expected_files().items()
                     if not (args.dir / rel).exists() or (args.dir / rel).read_text() != text]
            for rel in drift:
                print(f"out of date: {args.dir / rel}", file=sys.stderr)
            return 1 if drift else 0
        for rel in write_files(args.dir):
            print(f"wrote {args.dir / rel}", file=sys.stderr)
        return 0
    if args.command == "demo":
        from stream_app.tools.demo import run_demo

        _settings()  # the demo's worker reads the same PULSE_* variables: refuse bad ones now
        return run_demo(args.months, args.duration, args.rate, args.seed)
    if args.command == "generate":
        from stream_app.tools.generator import GeneratorSettings, generate_events

        end = dt.datetime.fromisoformat(args.end) if args.end else dt.datetime.now(dt.UTC)
        if end.tzinfo is None:
            raise SystemExit("--end needs a UTC offset, e.g. 2026-11-01T00:00:00Z")
        cfg = GeneratorSettings(
            seed=args.seed, start=end - dt.timedelta(days=30 * args.months), end=end,
            deals_per_day=args.deals_per_day, teams=tuple(args.teams.split(",")),
            expected_close_error_days=args.expected_close_error_days,
            plan_update_probability=args.plan_update_probability,
        )
        _write_jsonl(list(generate_events(cfg)), args.out)
        return 0
    if args.command == "replay":
        from stream_app.tools.replay import iter_jsonl, produce_events

        settings = _settings()
        if not settings.kafka_bootstrap:
            raise SystemExit("replay needs PULSE_KAFKA_BOOTSTRAP (see `stream-app servers`)")
        total = sum(1 for _ in iter_jsonl(args.file))
        result = asyncio.run(produce_events(settings, iter_jsonl(args.file), total=total,
                                            show_progress=not args.no_progress,
                                            rate_per_s=args.rate))
        print(f"sent {result.sent} events in {result.seconds:.1f}s: {result.by_topic}",
              file=sys.stderr)
        for line_no, why in result.unroutable:
            print(f"line {line_no} not sent: {why}", file=sys.stderr)
        return 0 if not result.unroutable else 2
    if args.command == "dashboards":
        from stream_app.tools.dashboards import BoardSettings, dashboard_files

        boards = dashboard_files(BoardSettings.from_settings(_settings()))
        return _sync_files(boards, args.dir, args.check, "dashboards")
    if args.command == "manifests":
        from stream_app.tools.dashboards import BoardSettings
        from stream_app.tools.manifests import manifest_files

        files = manifest_files(args.rules, BoardSettings.from_settings(_settings()))
        return _sync_files(files, args.dir, args.check, "manifests")
    if args.command == "import":
        events, report = _import(args)
        _write_jsonl(events, args.out)
        print("\n".join(report.lines()), file=sys.stderr)
        return 0
    raise AssertionError(args.command)
