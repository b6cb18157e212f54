"""The text exposition of the worker's registry, written fast."""

from __future__ import annotations

__all__ = ["render"]

from collections.abc import Callable
from typing import cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

#: Prometheus' text form of a sample value (client_python's function, untyped upstream).
_go_float = cast(Callable[[float], str], _untyped_float_to_go)

_ESCAPE = str.maketrans({"\\": r"\\", "\n": r"\n", '"': r'\"'})
_FAST_TYPES = {"gauge": "gauge", "counter": "counter", "gaugehistogram": "histogram"}
_SPLIT_SUFFIXES = ("_created", "_gsum", "_gcount")


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of a registry: byte for byte what prometheus_client's
    ``generate_latest`` writes, about twice as fast for the families this collector
    yields (gauges, counters, gauge histograms; anything else goes through the library)."""
    metrics = list(registry.collect())
    if any(metric.type not in _FAST_TYPES for metric in metrics):
        return generate_latest(registry)
    out: list[str] = []
    append = out.append
    for metric in metrics:
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        append(f"# HELP {name} {doc}\n# TYPE {name} {_FAST_TYPES[metric.type]}\n")
        split: dict[str, list[str]] = {}
        for sample in metric.samples:
            labels = sample.labels
            text = (",".join(f'{k}="{str(labels[k]).translate(_ESCAPE)}"' for k in sorted(labels))
                    if labels else "")
            line = (f"{sample.name}{{{text}}} {_go_float(sample.value)}\n" if text
                    else f"{sample.name} {_go_float(sample.value)}\n")
            suffix = sample.name[len(metric.name):]
            if suffix in _SPLIT_SUFFIXES and sample.name.startswith(metric.name):
                split.setdefault(suffix, []).append(line)
            else:
                append(line)
        for suffix, lines in sorted(split.items()):
            append(f"# HELP {metric.name}{suffix} {doc}\n# TYPE {metric.name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")
