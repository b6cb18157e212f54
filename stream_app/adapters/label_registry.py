"""Which values of the capped labels get their own series, decided across workers."""

from __future__ import annotations

__all__ = ["LabelRegistry"]

from collections.abc import Callable, Iterable, Mapping

from stream_app.adapters.redis_store import RedisStore
from stream_app.labels import FOLDED_LABELS

#: Values sent to Redis per round trip.
_CHUNK = 1000


class LabelRegistry:
    """This worker's verdicts on label values (teams, owners, sources, products,
    competitors), decided through the shared Redis registry.

    While Redis is unreachable, undecided values are kept provisionally as long as
    this worker knows fewer than the cap, and decided when Redis answers again.
    ``version`` changes whenever a verdict does, so cached snapshots know to rebuild.
    """

    def __init__(self, redis: RedisStore, cap: Callable[[str], int]):
        self._redis = redis
        self._cap = cap
        self._verdicts: dict[str, dict[str, bool]] = {label: {} for label in FOLDED_LABELS}
        self._undecided: dict[str, set[str]] = {label: set() for label in FOLDED_LABELS}
        self.version = 0

    @property
    def pending(self) -> bool:
        """Whether some values were kept provisionally and still wait for Redis."""
        return any(self._undecided.values())

    async def admit(self, values: Mapping[str, Iterable[str]]) -> None:
        """Decide the values not decided yet (and those kept provisionally)."""
        for label in FOLDED_LABELS:
            verdicts = self._verdicts[label]
            undecided = self._undecided[label]
            new = sorted({v for v in values.get(label, ()) if v not in verdicts} | undecided)
            cap = self._cap(label)
            for start in range(0, len(new), _CHUNK):
                chunk = new[start:start + _CHUNK]
                answer = await self._redis.admit_labels(label, chunk, cap)
                if answer is None:
                    self._keep_provisionally(label, new[start:])
                    break
                if any(verdicts.get(value) != kept for value, kept in answer.items()):
                    verdicts.update(answer)
                    self.version += 1
                undecided.difference_update(chunk)

    def _keep_provisionally(self, label: str, values: list[str]) -> None:
        verdicts, undecided = self._verdicts[label], self._undecided[label]
        undecided.update(values)
        kept = sum(verdicts.values())
        for value in sorted(undecided):
            if value in verdicts:
                continue
            verdicts[value] = kept < self._cap(label)
            kept += verdicts[value]
            self.version += 1

    def keep(self, label: str, value: str) -> bool:
        """Whether ``value`` of ``label`` has its own series (else it folds into other)."""
        return self._verdicts[label].get(value, False)
