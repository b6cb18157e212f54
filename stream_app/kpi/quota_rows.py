"""Quotas per team and attainment per owner for the current periods, kept between
reports of a snapshot moved in place: only the owners whose quotas or won amounts
changed are read again, and the other owners keep the very same attainment tuples
(what lets the exporter write only the owners that changed)."""

from __future__ import annotations

__all__ = ["QuotaRows"]

from collections.abc import Mapping
from typing import Any

from stream_app.kpi.calendar import Calendar
from stream_app.kpi.rows import AttainmentKpis, PerOwner, QuotaKpis
from stream_app.kpi.snapshot import ALL_GROUP, Snapshot, exported_label
from stream_app.kpi.trailing import ChangeToken, OwnerCells

#: An owner's row for one period name: (team, quota cents, won cents).
_Row = tuple[str, int, int]
#: Per team of one period name: [quota cents, owners, owners at quota, won cents].
_QUOTA, _OWNERS, _AT_QUOTA, _WON = range(4)


class QuotaRows:
    """Per owner with a quota for a current period (month, quarter, last month, last
    quarter): its team, quota and the amount it won in the period's months; from them
    the quotas per team (:meth:`quotas`) and the attainment per owner
    (:meth:`attainment`, owners the cap refuses summed into ``(other)``).

    :meth:`update` reads again only the owners whose quota or won cells changed since
    the last call (every owner for a snapshot other than the last one's, plain dicts or
    other periods)."""

    def __init__(self) -> None:
        self._calendar: Calendar | None = None
        self._seen: tuple[ChangeToken | None, ChangeToken | None] = (None, None)
        self._periods: dict[str, str] = {}
        self._months: dict[str, tuple[str, ...]] = {}
        self._rows: dict[str, dict[str, _Row]] = {}
        self._group: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}
        self._teams: dict[str, dict[str, list[int]]] = {}
        self._attainment: dict[str, tuple[AttainmentKpis, ...]] = {}
        self._sorted: PerOwner[AttainmentKpis] | None = None
        #: Owners read by :meth:`update` since this object was made.
        self.owners_read = 0

    def update(self, snap: Snapshot, periods: Mapping[str, str], calendar: Calendar) -> None:
        """Bring the rows to ``snap`` at the current ``periods`` (kind -> name) of
        ``calendar``."""
        quota_changes, quota_seen = _changes(snap.quota_cents, self._seen[0])
        won_changes, won_seen = _changes(snap.owner_won, self._seen[1])
        self._seen = (quota_seen, won_seen)
        if (quota_changes is None or won_changes is None or periods != self._periods
                or calendar is not self._calendar):
            self._calendar = calendar
            self._rebuild(snap, dict(periods), calendar)
            return
        groups: set[str] = set()
        for owner in quota_changes | won_changes:
            groups.update(self._read(snap, owner))
        for group in groups:
            self._sum_group(group)
        if groups:
            self._sorted = None

    def quotas(self, teams: list[str], open_cents: Mapping[str, int]) -> list[QuotaKpis]:
        """Per period, per team of ``teams`` with a quota then and ``all``: the quotas,
        owners, owners at quota and won amounts summed, with the group's open pipeline."""
        out: list[QuotaKpis] = []
        for period, name in self._periods.items():
            sums = {team: total for team, total in self._teams[name].items() if total[_OWNERS]}
            if sums:
                sums[ALL_GROUP] = [sum(column) for column in zip(*sums.values(), strict=True)]
            for group in (*teams, ALL_GROUP):
                if group in sums:
                    quota, owners, at_quota, won = sums[group]
                    out.append(QuotaKpis(group, period, name, quota, owners, at_quota, won,
                                         open_cents.get(group, 0)))
        return out

    def attainment(self) -> PerOwner[AttainmentKpis]:
        """Per owner (or ``(other)``), in order: its quota and won amount per period."""
        if self._sorted is None:
            kept = self._attainment
            self._sorted = {group: kept[group] for group in sorted(kept)}
        return self._sorted

    def _rebuild(self, snap: Snapshot, periods: dict[str, str], calendar: Calendar) -> None:
        self._periods = periods
        self._months = {name: calendar.period_months(name) for name in periods.values()}
        self._rows, self._group, self._members = {}, {}, {}
        self._teams = {name: {} for name in periods.values()}
        self._attainment, self._sorted = {}, None
        names = self._months
        groups: set[str] = set()
        for owner in {owner for owner, period in snap.quota_cents if period in names}:
            groups.update(self._read(snap, owner))
        for group in groups:
            self._sum_group(group)

    def _read(self, snap: Snapshot, owner: str) -> tuple[str, ...]:
        """Read ``owner``'s rows again (moving the team sums from its old rows to its new
        ones); the attainment groups to sum again (the one it belongs to, and the one it
        left)."""
        self.owners_read += 1
        old = self._rows.pop(owner, None)
        if old is not None:
            for name, row in old.items():
                _add_row(self._teams[name], row, -1)
        rows: dict[str, _Row] = {}
        quota_cents, quota_team, won_in = snap.quota_cents, snap.quota_team, snap.owner_won.get
        for name, months in self._months.items():
            quota = quota_cents.get((owner, name))
            if quota is None:
                continue
            won = 0
            for month in months:
                won += won_in((owner, month), 0)
            row = rows[name] = (quota_team[(owner, name)], quota, won)
            _add_row(self._teams[name], row, 1)
        group = _attainment_group(snap, owner)
        before = self._group.pop(owner, None)
        if before is not None:
            self._members[before].discard(owner)
        if rows:
            self._rows[owner] = rows
            self._group[owner] = group
            self._members.setdefault(group, set()).add(owner)
        return (group,) if before is None or before == group else (group, before)

    def _sum_group(self, group: str) -> None:
        members = self._members.get(group)
        rows = [self._rows[owner] for owner in members] if members else []
        out: list[AttainmentKpis] = []
        for period, name in self._periods.items():
            quota = won = 0
            found = False
            for owned in rows:
                row = owned.get(name)
                if row is not None:
                    found = True
                    quota += row[1]
                    won += row[2]
            if found:
                out.append(AttainmentKpis(group, period, quota, won))
        if out:
            self._attainment[group] = tuple(out)
        else:
            self._attainment.pop(group, None)


def _changes(cells: Mapping[tuple[str, str], Any], since: ChangeToken | None
             ) -> tuple[set[str] | None, ChangeToken | None]:
    if isinstance(cells, OwnerCells):
        return cells.changes(since)
    return None, None


def _attainment_group(snap: Snapshot, owner: str) -> str:
    """The owner's label as exported, under the cap's verdict the snapshot noted."""
    return exported_label("owner", owner, lambda _, value: snap.owner_kept.get(value, True))


def _add_row(teams: dict[str, list[int]], row: _Row, sign: int) -> None:
    team, quota, won = row
    total = teams.get(team)
    if total is None:
        total = teams[team] = [0, 0, 0, 0]
    total[_QUOTA] += sign * quota
    total[_OWNERS] += sign
    total[_AT_QUOTA] += sign * (won >= quota)
    total[_WON] += sign * won
