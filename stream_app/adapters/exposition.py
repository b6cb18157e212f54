"""The text exposition of the worker's registry, written fast and reused where the
state did not change."""

from __future__ import annotations

__all__ = ["GroupSamples", "RowGauge", "TextRenderer", "render", "value_text"]

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

#: Prometheus' text form of a sample value (client_python's function, untyped upstream).
_go_float = cast(Callable[[float], str], _untyped_float_to_go)

_ESCAPE = str.maketrans({"\\": r"\\", "\n": r"\n", '"': r'\"'})
_FAST_TYPES = {"gauge": "gauge", "counter": "counter", "gaugehistogram": "histogram"}
_SPLIT_SUFFIXES = ("_created", "_gsum", "_gcount")
#: One sample of a :class:`RowGauge`: (label values, value, its text line).
_Entry = tuple[tuple[str, ...], float, str]
#: Per family, the text of a group's samples; and per family, the samples.
_Blocks = tuple[tuple[str, ...], tuple[tuple[_Entry, ...], ...]]
#: Integers below this (and above its negative) are exact as floats.
_EXACT_INT = 2**53
#: From here on Prometheus' text form of a positive value has an exponent.
_GO_EXPONENT_FROM = 1_000_000


def value_text(value: float) -> str:
    """Prometheus' text form of a sample value (``floatToGoString``), an ``int`` that
    needs no exponent written directly."""
    if type(value) is int and -_EXACT_INT < value < _GO_EXPONENT_FROM:
        return f"{value}.0"
    return _go_float(value)


class RowGauge(GaugeMetricFamily):
    """A gauge family that keeps its samples as (label values, value) rows and makes
    prometheus_client's ``Sample`` objects only when something asks for ``samples``
    (:class:`TextRenderer` writes the rows directly). Not to be changed once collected:
    the renderer keeps the text of a family it has written."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]):
        #: (label values, value, its text line if already written, else None).
        self.rows: list[tuple[tuple[str, ...], float, str | None]] = []
        #: Samples already written, after the rows (see :class:`GroupSamples`): their
        #: text, and the samples, block by block.
        self.block_texts: list[str] = []
        self.block_samples: list[tuple[_Entry, ...]] = []
        super().__init__(name, documentation, labels=labels)
        names = self._labelnames
        self._order = sorted(range(len(names)), key=names.__getitem__)
        self._prefixes = [f'{names[i]}="' for i in self._order]

    def add_metric(self, labels: Sequence[str], value: float,
                   timestamp: Any = None) -> None:
        """Add one sample (no timestamp: the exposition never sets one)."""
        if timestamp is not None:
            raise ValueError("RowGauge samples carry no timestamp")
        self.rows.append((tuple(labels), value, None))

    def line(self, labels: tuple[str, ...], value: float) -> str:
        """The text line of one sample."""
        if not labels:
            return f"{self.name} {value_text(value)}\n"
        text = '",'.join(prefix + labels[i].translate(_ESCAPE)
                         for prefix, i in zip(self._prefixes, self._order, strict=True))
        return f'{self.name}{{{text}"}} {value_text(value)}\n'

    @staticmethod
    def moved(line: str, value: float) -> str:
        """``line`` (a text line of this family) with ``value`` for its value: the name
        and labels are kept as written (the last space ends them; values have none)."""
        return line[:line.rfind(" ") + 1] + value_text(value) + "\n"

    @property
    def samples(self) -> list[Sample]:
        """The rows as prometheus_client samples."""
        names = self._labelnames
        entries = [*self.rows, *(entry for block in self.block_samples for entry in block)]
        return [Sample(self.name, dict(zip(names, labels, strict=True)), value, None)
                for labels, value, _ in entries]

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        if value:
            raise ValueError("add samples with add_metric")


def _header(name: str, documentation: str, kind: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


class TextRenderer:
    """Writes the text exposition of a registry: byte for byte what prometheus_client's
    ``generate_latest`` writes. A :class:`RowGauge` is written from its rows, with the
    line of a series whose value did not change since the previous call reused, and a
    family object seen at the previous call (a collector that reused it) reused whole."""

    def __init__(self) -> None:
        self._lines: dict[str, dict[tuple[str, ...], tuple[float, str]]] = {}
        self._texts: dict[int, tuple[Metric, bytes]] = {}

    def render(self, registry: CollectorRegistry) -> bytes:
        """The exposition of every family ``registry`` collects now."""
        metrics = list(registry.collect())
        if any(metric.type not in _FAST_TYPES for metric in metrics):
            return generate_latest(registry)
        return self.render_families(metrics)

    def render_families(self, metrics: Sequence[Metric]) -> bytes:
        """The exposition of ``metrics`` (gauges, counters and gauge histograms)."""
        texts: dict[int, tuple[Metric, bytes]] = {}
        lines: dict[str, dict[tuple[str, ...], tuple[float, str]]] = {}
        out: list[bytes] = []
        for metric in metrics:
            known = self._texts.get(id(metric))
            if known is not None and known[0] is metric:
                text = known[1]
                if isinstance(metric, RowGauge):
                    lines[metric.name] = self._lines.get(metric.name, {})
            elif isinstance(metric, RowGauge):
                text = self._row_gauge(metric, lines).encode("utf-8")
            else:
                text = _family(metric).encode("utf-8")
            if isinstance(metric, RowGauge):
                texts[id(metric)] = (metric, text)
            out.append(text)
        self._texts, self._lines = texts, lines
        return b"".join(out)

    def _row_gauge(self, metric: RowGauge,
                   lines: dict[str, dict[tuple[str, ...], tuple[float, str]]]) -> str:
        name = metric.name
        previous = self._lines.get(name, {})
        current: dict[tuple[str, ...], tuple[float, str]] = {}
        out = [_header(name, metric.documentation, "gauge")]
        append = out.append
        for labels, value, written in metric.rows:
            if written is not None:
                append(written)
                continue
            known = previous.get(labels)
            if known is None:
                line = metric.line(labels, value)
            elif known[0] == value and type(known[0]) is type(value):
                line = known[1]
            else:
                line = metric.moved(known[1], value)
            current[labels] = (value, line)
            append(line)
        lines[name] = current
        out.extend(metric.block_texts)
        return "".join(out)


class GroupSamples:
    """The samples groups of report rows give their families, kept from one scrape to
    the next: a group whose rows are the very object of the previous scrape adds the
    same text blocks to its families without computing them again, so a scrape writes
    only the groups that changed (an owner's rows: most owners' do not change between
    two scrapes). One per place that turns groups of one kind into samples of the same
    families (in the same order)."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[Any, _Blocks]] = {}

    def add(self, groups: Mapping[str, Sequence[Any]], families: Sequence[RowGauge],
            samples: Callable[[Any], Sequence[tuple[Sequence[str], float] | None]]) -> None:
        """Add every group's samples to ``families``, group after group
        (``samples(row)``: one (label values, value) per family, None for none; called
        only for the rows of a group not seen last time). A family may stand at several
        positions; its samples are written in the order given."""
        distinct = list({id(family): family for family in families}.values())
        position = [distinct.index(family) for family in families]
        previous = self._previous
        current: dict[str, tuple[Any, _Blocks]] = {}
        for key, rows in groups.items():
            known = previous.get(key)
            if known is None:
                known = (rows, _blocks(rows, distinct, position, samples, None))
            elif known[0] is not rows:
                known = (rows, _blocks(rows, distinct, position, samples, known[1][1]))
            current[key] = known
        self._previous = current
        kept = list(current.values())
        for at, family in enumerate(distinct):
            family.block_texts.extend([blocks[0][at] for _, blocks in kept])
            family.block_samples.extend([blocks[1][at] for _, blocks in kept])


def _blocks(rows: Sequence[Any], families: Sequence[RowGauge], position: Sequence[int],
            samples: Callable[[Any], Sequence[tuple[Sequence[str], float] | None]],
            before: tuple[tuple[_Entry, ...], ...] | None) -> _Blocks:
    """Per family, the text and samples of ``rows``; a line of the same label values
    at the same place in ``before`` (the group's previous samples) is kept, or written
    from it with the new value."""
    entries: list[list[_Entry]] = [[] for _ in families]
    for row in rows:
        for at, sample in zip(position, samples(row), strict=True):
            if sample is None:
                continue
            labels, value = tuple(sample[0]), sample[1]
            found = entries[at]
            old = before[at] if before is not None and len(before[at]) > len(found) else None
            known = None if old is None else old[len(found)]
            if known is None or known[0] != labels:
                found.append((labels, value, families[at].line(labels, value)))
            elif known[1] == value and type(known[1]) is type(value):
                found.append(known)
            else:
                found.append((labels, value, RowGauge.moved(known[2], value)))
    return (tuple("".join([line for _, _, line in found]) for found in entries),
            tuple(tuple(found) for found in entries))


def _family(metric: Metric) -> str:
    """One family of a fast type from its samples."""
    name = metric.name + "_total" if metric.type == "counter" else metric.name
    out = [_header(name, metric.documentation, _FAST_TYPES[metric.type])]
    append = out.append
    split: dict[str, list[str]] = {}
    for sample in metric.samples:
        labels = sample.labels
        text = (",".join(f'{k}="{str(labels[k]).translate(_ESCAPE)}"' for k in sorted(labels))
                if labels else "")
        line = (f"{sample.name}{{{text}}} {value_text(sample.value)}\n" if text
                else f"{sample.name} {value_text(sample.value)}\n")
        suffix = sample.name[len(metric.name):]
        if suffix in _SPLIT_SUFFIXES and sample.name.startswith(metric.name):
            split.setdefault(suffix, []).append(line)
        else:
            append(line)
    for suffix, split_lines in sorted(split.items()):
        append(_header(metric.name + suffix, metric.documentation, "gauge"))
        out.extend(split_lines)
    return "".join(out)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of a registry, written once (see :class:`TextRenderer`)."""
    return TextRenderer().render(registry)
