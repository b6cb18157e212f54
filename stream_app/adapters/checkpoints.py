"""Local checkpoints of table partitions, so a restarted worker reads only the changelog tail.

A checkpoint of one changelog partition holds every record of that partition's state at
a moment when everything in memory was in the changelog (no batch running, the producer
flushed): so it equals a replay of the changelog up to its last offset then, ``offset``.
It also holds what identifies that changelog: its topic, partition and offset, and a
digest of the records at its earliest offset and at ``offset``. A restarted worker loads
a checkpoint only if the changelog still holds those same records (the digest matches);
then it reads the changelog after ``offset`` only. A checkpoint of an older offset (stale)
just leaves a longer tail; one whose changelog was deleted, recreated or truncated, or
that another application wrote (foreign), fails the digest check or the offset check and
is discarded; a missing or unreadable file means a read from the earliest offset.

Files: ``<data dir>/checkpoints/<changelog topic>/<partition>.ckpt``, written to a
temporary name and renamed, so a worker killed while writing leaves the previous one.
The format is :mod:`marshal` of plain values (str, int, list, dict): fast, and read only
from the worker's own data directory.
"""

from __future__ import annotations

__all__ = ["FORMAT", "Checkpoint", "CheckpointFiles", "Record", "digest_at", "read_record",
           "record_digest"]

import hashlib
import logging
import marshal
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: A changelog record: offset, key, value (None: a deletion).
Record = tuple[int, bytes | None, bytes | None]

#: Bumped when the file layout or the meaning of a record changes: older files are ignored.
FORMAT = 1


def record_digest(earliest: Record, last: Record) -> str:
    """Digest of two changelog records, each (offset, key, value)."""
    digest = hashlib.sha256()
    for offset, key, value in (earliest, last):
        for part in (str(offset).encode(), key or b"\x00", value or b"\x00"):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """One changelog partition's records up to ``offset``, and what identifies them."""

    topic: str
    partition: int
    #: The changelog's last offset the records include.
    offset: int
    #: The changelog's earliest offset when the checkpoint was written.
    earliest: int
    #: :func:`record_digest` of the records at ``earliest`` and at ``offset``.
    digest: str
    records: dict[Any, Any]


class CheckpointFiles:
    """Checkpoint files under one worker's data directory."""

    def __init__(self, data_dir: str | os.PathLike[str]):
        self.root = Path(data_dir) / "checkpoints"

    def path(self, topic: str, partition: int) -> Path:
        """Where the checkpoint of ``topic[partition]`` lives."""
        return self.root / topic / f"{partition}.ckpt"

    def write(self, checkpoint: Checkpoint) -> int:
        """Write ``checkpoint`` (atomically: a temporary file renamed); returns bytes."""
        path = self.path(checkpoint.topic, checkpoint.partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "topic": checkpoint.topic,
                  "partition": checkpoint.partition, "offset": checkpoint.offset,
                  "earliest": checkpoint.earliest, "digest": checkpoint.digest}
        body = marshal.dumps((header, checkpoint.records))
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        return len(body)

    def read(self, topic: str, partition: int) -> Checkpoint | None:
        """The checkpoint of ``topic[partition]``; None if missing, unreadable, of another
        format or naming another partition (each logged, except missing)."""
        path = self.path(topic, partition)
        try:
            header, records = marshal.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError, TypeError) as error:
            log.warning("checkpoint %s unreadable (%s); restoring from the changelog",
                        path, error)
            return None
        if (not isinstance(header, dict) or header.get("format") != FORMAT
                or header.get("topic") != topic or header.get("partition") != partition
                or not isinstance(records, dict)):
            log.warning("checkpoint %s is of another format or partition; restoring from "
                        "the changelog", path)
            return None
        return Checkpoint(topic, partition, int(header["offset"]), int(header["earliest"]),
                          str(header["digest"]), records)

    def discard(self, topic: str, partition: int) -> None:
        """Remove the checkpoint of ``topic[partition]`` (if any)."""
        self.path(topic, partition).unlink(missing_ok=True)


async def read_record(consumer: Any, kafka_tp: Any, offset: int) -> Record | None:
    """The record at ``offset`` of an assigned partition (offset, key, value); None if
    that offset holds no record (compacted, truncated, or past the end)."""
    consumer.seek(kafka_tp, offset)
    for _ in range(20):
        fetched = await consumer.getmany(kafka_tp, timeout_ms=250, max_records=1)
        for message in fetched.get(kafka_tp, []):
            if message.offset != offset:
                return None
            return message.offset, message.key, message.value
    return None


async def digest_at(consumer: Any, kafka_tp: Any, earliest: int, offset: int) -> str | None:
    """:func:`record_digest` of the records at ``earliest`` and ``offset`` of an assigned
    partition; None if either is missing."""
    first = await read_record(consumer, kafka_tp, earliest)
    last = await read_record(consumer, kafka_tp, offset)
    if first is None or last is None:
        return None
    return record_digest(first, last)
