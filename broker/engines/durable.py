"""The embedded durable store: every event in an LMDB file before anyone sees it.

Theory of operation (the guarantee and its limits: docs/durability.md).

* **Write-ahead of delivery.** The hub gives a publish its ids (:meth:`Hub.publish`,
  ``publishing.py``) and hands the events to :meth:`Journal.append`, which returns once
  they are committed; only then are they delivered and acknowledged. Publishes that
  arrive while a commit runs, or in the loop pass the committer waits before it begins,
  wait for the next one and go in one transaction together (group commit). In
  ``process`` mode a small group is committed in the Trio loop itself (no flush: the
  commit copies pages into the page cache, a few µs per event, less than the hop to a
  thread); ``fsync`` groups, big groups and any commit while the writer thread is busy go
  to that one worker thread, so the loop never waits on the disk or on LMDB's write
  lock. Reads (a topic that is not in memory) use a second thread: LMDB readers never
  wait on the writer.
* **The log first, the index after.** A group commit appends the events' records to
  ``events`` (and any retained or closing state); the topic index, the position vector,
  the last index and count retention follow every ``INDEX_EVERY`` events, inside a group
  commit, and before any sweep, ``DELETE`` or clean stop (``DiskStore._index``): per
  commit they cost more than the records themselves. What is committed but not indexed
  yet is read back from the in-memory ``_unindexed`` list beside the index, and a start
  after a crash indexes the tail of ``events`` past the last index it recorded.
* **What the file holds** (one LMDB environment, named databases):
  ``events`` (delivery index -> event record), ``by_topic`` (topic -> index, seq and
  origin of each of its events, sorted duplicates), ``retained`` (topic NUL type ->
  record), ``final`` (topic -> record), ``tmeta`` (topic -> per-origin seqs evicted
  from its history), ``origins`` (origin -> last seq: the position vector) and ``meta``
  (this node's origin, the last index, the boot id and the clean-shutdown mark).
* **Identity survives.** The node's origin and the vector are read back at start, so a
  restarted node goes on in the same id space. After an operating-system crash in
  ``process`` mode (the boot id changed and the last run did not stop cleanly) the tail
  may be gone, so a new origin is drawn and the old one is *retired* at what survived:
  no seq is ever reused for a different event, and a client past it gets
  ``broker.reset`` (reason ``lost``).
* **Retention**: per topic by count when the index catches up (with some slack, so it
  costs one trim every few dozen events); in the writer thread, in a sweep every
  ``sweep_seconds``, by age, by total bytes (oldest first) and retained/closed state by
  ``closed_ttl_seconds``.
  What a topic loses is recorded per origin (``tmeta``), so a resume from before it is
  answered ``broker.reset`` with reason ``evicted``.
* **Faults.** A failed commit (disk full, I/O error) fails that group and everything
  staged behind it with :class:`~broker.hub.engine.Unavailable` (503); nothing of it was
  delivered or acknowledged, the hub takes the ids back, and the next publish tries
  again. :attr:`Journal.problem` says why for ``/readyz``. A store that fails its check
  at start (``storecheck.py``, in a child process) is moved aside, what still reads back
  is salvaged into a new one (another child), and it goes on under a new origin, with one
  log line. One broker per store: a lock file in the directory.

This module is the *engine* layer's embedded store; the hub sees it only through the
:class:`~broker.hub.engine.Journal` protocol.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Final, TextIO, cast

import lmdb
import msgpack
import outcome
import trio

from ..core import positions
from ..core.errors import ConfigError
from ..hub.engine import Unavailable
from ..hub.events import Event, uncollected
from . import storecheck

log = logging.getLogger(__name__)

#: Address space reserved for the file (not disk: LMDB grows the file as it writes,
#: without the write-map option).
MAP_SIZE: Final = 1 << 40
#: Per-topic count retention trims when a topic holds this many more than history.size.
TRIM_SLACK: Final = 32
#: The topic index, the vector and count retention follow the log every this many events
#: (``DiskStore._index``): per group commit they cost more than the events' own records.
INDEX_EVERY: Final = 512
_pack = msgpack.Packer(use_bin_type=True).pack
#: In ``process`` mode a group of at most this many events, and this many characters of
#: payload, is committed in the Trio loop; a bigger one goes to the writer thread. The hop
#: to the thread and back costs about 39 µs of CPU per commit, and the wait for the OS to
#: run that thread; a commit of 100-byte events costs 17 µs alone, 2-3 µs per event in
#: groups (measured: 500 events ~1 ms of CPU, 256 KiB of payload 0.5-1 ms), so the loop's
#: longest step stays well under the 5 ms it may take.
LOOP_COMMIT_EVENTS: Final = 500
LOOP_COMMIT_CHARS: Final = 256 * 1024
_EIGHT: Final = 8


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """``[storage]`` as the store needs it.

    Attributes:
        path: the data directory (created if missing).
        durability: ``process`` (survives a crash of the broker) or ``fsync`` (survives
            power loss: every group commit is flushed to the disk).
        history_size: events kept per topic.
        max_age_seconds: events older than this leave the store (0: no limit).
        max_bytes: the store's size limit; the oldest events go first (0: no limit).
        closed_ttl_seconds: retained events and closed topics are kept this long.
        sweep_seconds: how often age, size and TTL retention run.
        boot_id_file: where the kernel's boot id is read (tests point it elsewhere).
    """

    path: str
    durability: str = "process"
    history_size: int = 1000
    max_age_seconds: float = 0.0
    max_bytes: int = 0
    closed_ttl_seconds: float = 7 * 86400.0
    sweep_seconds: float = 5.0
    boot_id_file: str = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a start found in the store: the node's identity and position."""

    origin: str
    index: int
    vector: dict[str, int]
    retired: dict[str, int]
    new_epoch: str | None  # why a new origin was drawn, or None


@dataclass(slots=True)
class LoadedTopic:
    """A topic as the store keeps it (built into the hub's ``_Topic`` by the hub)."""

    name: str
    events: list[Event]
    evicted: dict[str, int]
    retained: dict[str | None, Event]
    final: Event | None


@dataclass(frozen=True, slots=True)
class JournalStatistics:
    """``/stats`` ``storage``."""

    path: str
    durability: str
    commits: int
    loop_commits: int  # of ``commits``: those run in the Trio loop (``process`` mode)
    committed_events: int
    failed_commits: int
    bytes_used: int
    problem: str | None


#: A topic's index entry: the event's key (its index), then its seq and origin, so
#: trimming a topic never reads the events it deletes. 32 bytes: origins are at most 16.
_pack_entry = struct.Struct(">QQ16s").pack


def _entry(index: int, seq: int, origin: str) -> bytes:
    return _pack_entry(index, seq, origin.encode())


def _entry_origin_seq(entry: bytes) -> tuple[str, int]:
    return entry[16:].rstrip(b"\0").decode(), int.from_bytes(entry[8:16], "big")


def _record(event: Event) -> bytes:
    return cast(
        bytes,
        _pack(
            (
                event.origin,
                event.seq,
                event.topic,
                event.event_type,
                event.data,
                event.is_json,
                event.published_at,
                event.retain | (event.final << 1),
                event.id,
            )
        ),
    )


def _event(index: int, value: bytes) -> Event:
    origin, seq, topic, event_type, data, is_json, published_at, flags, event_id = msgpack.unpackb(
        value
    )
    event = Event(
        topic=topic,
        event_type=event_type,
        data=data,
        is_json=is_json,
        origin=origin,
        seq=seq,
        index=index,
        event_id=event_id,
        published_at=published_at,
        retain=bool(flags & 1),
        final=bool(flags & 2),
    )
    return uncollected(event)  # (read back to stay in a topic's history)


def boot_id(path: str) -> str:
    """This kernel's boot id ("" where there is none: then a reboot cannot be told)."""
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return ""


class DiskStore:
    """The LMDB environment and every operation on it (blocking).

    Writes run in one thread (:class:`Journal`'s writer), or for a small group commit in
    ``process`` mode in the Trio loop while that thread is idle; reads run beside them in
    another thread.
    """

    def __init__(self, options: JournalOptions) -> None:
        self.options = options
        self.path = Path(options.path)
        self.env: lmdb.Environment | None = None
        #: (topic, entry) of the events committed but not yet in the topic index, in
        #: order (``_index``); read by the reader thread too (a copy, under the GIL).
        self._unindexed: list[tuple[bytes, bytes]] = []
        self._indexed = 0  # how many of them the transaction in progress indexed

    # -- opening ------------------------------------------------------------------------

    def open(self) -> Recovered:
        """Open (or create) the store and read back this node's identity.

        The store is checked first in a child process (LMDB reads its file through a
        memory map: a truncated or scribbled file could kill the process that reads
        it, and a crash at every start is the one failure a broker must not have).
        """
        self._lock_path()
        damage = None
        if (self.path / "data.mdb").exists():
            damage = _verify_in_child(self.path)
        if damage is not None:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
            count = 1
            while aside.exists():  # (damaged twice in one second)
                count += 1
                aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{count}")
            self._unlock()
            os.replace(self.path, aside)
            self._lock_path()
            saved = _salvage_in_child(aside, self.path)
            log.error(
                "storage: the store in %s %s; it was moved to %s and a new one begins with "
                "the %d events that could still be read (new origin: a client past them "
                "gets broker.reset)",
                self.path,
                damage,
                aside,
                saved,
            )
        try:
            self._open_env()
        except lmdb.Error as error:  # not damage (the check passed): permissions, space …
            self._unlock()
            raise ConfigError(
                f"[storage] path {self.path}: cannot open the store: {error}"
            ) from None
        return self._recover("the previous store was damaged" if damage else None)

    def _lock_path(self) -> None:
        """One broker per store: a second one on the same path stops with one line."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / "broker.lock", "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(
                f"[storage] path {self.path}: another broker is using this store"
            ) from None

    def _unlock(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()  # releases the flock
            self._lock = None

    _lock: TextIO | None

    def _open_env(self) -> None:
        self.env = lmdb.open(
            str(self.path),
            map_size=MAP_SIZE,
            max_dbs=8,
            sync=self.options.durability == "fsync",
            metasync=True,
            writemap=False,
            readahead=False,
            max_readers=64,
        )
        env = self.env
        self.meta = env.open_db(b"meta")
        self.events = env.open_db(b"events")
        self.by_topic = env.open_db(b"by_topic", dupsort=True, dupfixed=True)
        self.retained = env.open_db(b"retained")
        self.final = env.open_db(b"final")
        self.tmeta = env.open_db(b"tmeta")
        self.origins = env.open_db(b"origins")

    def _close_env(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def _recover(self, damaged: str | None) -> Recovered:
        assert self.env is not None
        with self.env.begin(write=True) as txn:
            meta = self.meta
            self._index_log_tail(txn)
            origin_b = txn.get(b"origin", db=meta)
            vector = {k.decode(): int.from_bytes(v, "big") for k, v in txn.cursor(self.origins)}
            retired = msgpack.unpackb(txn.get(b"retired", db=meta) or b"\x80")
            index = int.from_bytes(txn.get(b"index", db=meta) or b"\0", "big")
            clean = txn.get(b"clean", db=meta) == b"1"
            last_boot = (txn.get(b"boot", db=meta) or b"").decode()
            last_durability = (txn.get(b"durability", db=meta) or b"process").decode()
            now_boot = boot_id(self.options.boot_id_file)
            new_epoch = damaged
            if origin_b is None:
                new_epoch = new_epoch or "a new store"
            elif not clean and last_durability == "process" and last_boot != now_boot:
                new_epoch = (
                    "the operating system restarted since the broker last ran and it did "
                    "not stop cleanly: the last events before that may be lost"
                )
            if new_epoch is not None and origin_b is not None:
                old = origin_b.decode()
                retired[old] = vector.get(old, 0)
            if new_epoch is None and origin_b is not None:
                origin = origin_b.decode()
            else:
                origin = positions.new_origin()
            while new_epoch is not None and origin in vector:
                origin = positions.new_origin()
            vector.setdefault(origin, 0)
            txn.put(b"origin", origin.encode(), db=meta)
            txn.put(b"origins_" + origin.encode(), b"", db=meta)
            txn.put(origin.encode(), vector[origin].to_bytes(8, "big"), db=self.origins)
            txn.put(b"retired", _pack(retired), db=meta)
            txn.put(b"clean", b"0", db=meta)
            txn.put(b"boot", now_boot.encode(), db=meta)
            txn.put(b"durability", self.options.durability.encode(), db=meta)
            txn.put(b"index", index.to_bytes(8, "big"), db=meta)
        self.env.sync(True)  # the "not clean" mark is on the disk before any event
        return Recovered(origin, index, vector, retired, new_epoch)

    def _index_log_tail(self, txn: lmdb.Transaction) -> None:
        """Index what the last run committed after its last :meth:`_index` (at most a few
        hundred events, unless it committed a big group just before it stopped)."""
        last = txn.get(b"index", db=self.meta)
        start = int.from_bytes(last, "big") + 1 if last is not None else 0
        cursor = txn.cursor(self.events)
        entries = []
        found = cursor.set_range(start.to_bytes(_EIGHT, "big"))
        while found:
            origin, seq, topic = msgpack.unpackb(cursor.value())[:3]
            entries.append(
                (topic.encode(), _entry(int.from_bytes(cursor.key(), "big"), seq, origin))
            )
            found = cursor.next()
        if entries:
            self._apply_index(txn, entries)

    def close(self) -> None:
        """Mark a clean shutdown, flush, close."""
        if self.env is None:
            self._unlock()
            return
        try:
            with self.env.begin(write=True) as txn:
                self._index(txn)  # (so a start after a clean stop has nothing to index)
                txn.put(b"clean", b"1", db=self.meta)
            self.env.sync(True)
        except lmdb.Error as error:
            log.error("storage: could not mark a clean shutdown: %s", error)
        self._close_env()
        self._unlock()

    # -- writing ------------------------------------------------------------------------

    def write(self, events: Sequence[Event]) -> None:
        """Commit a group of events in one transaction.

        The transaction appends the events' records (the log) and any retained or closing
        state; each topic's index entries, the position vector and count retention follow
        every ``INDEX_EVERY`` events (see :meth:`_index`).
        """
        if self.env is None:
            self._open_env()
        env = self.env
        assert env is not None
        unindexed = self._unindexed
        before = len(unindexed)
        try:
            with env.begin(write=True) as txn:
                put = txn.put
                records = []
                for event in events:
                    value = _record(event)
                    index = event.index
                    records.append((index.to_bytes(_EIGHT, "big"), value))
                    topic = event.topic.encode()
                    unindexed.append((topic, _pack_entry(index, event.seq, event.origin.encode())))
                    if event.retain:
                        put(
                            topic + b"\0" + (event.event_type or "").encode(),
                            value,
                            db=self.retained,
                        )
                    if event.final:
                        put(topic, value, db=self.final)
                # One putmulti: the loop over the group runs in C (py-lmdb).
                txn.cursor(self.events).putmulti(records, append=True)
                if len(unindexed) >= INDEX_EVERY:
                    self._index(txn)
        except BaseException as error:
            del unindexed[before:]  # not committed: not to be indexed (nor read back)
            self._indexed = 0
            if isinstance(error, lmdb.PanicError):
                # After a failed commit LMDB may refuse every later transaction
                # (MDB_PANIC): the next write opens the environment again.
                self._close_env()
            raise
        if self._indexed:
            del unindexed[: self._indexed]
            self._indexed = 0

    def _index(self, txn: lmdb.Transaction) -> None:
        """Index the events committed since the last time, inside ``txn``.

        Each topic's entries, the position vector, the last index and count retention
        cost a few µs per transaction whatever the group's size, so they are done for
        several hundred events at once rather than in every group commit. What is not
        indexed yet is still found: :meth:`load` reads ``_unindexed`` beside the topic
        index, and a start indexes what the last run committed after its last time
        (:meth:`_recover`). The entries leave ``_unindexed`` only once ``txn`` has
        committed (:meth:`write` and :meth:`index_now`), so a concurrent read finds each
        event in one place or the other.
        """
        entries = self._unindexed
        if not entries:
            return
        self._apply_index(txn, entries)
        self._indexed = len(entries)

    def _apply_index(self, txn: lmdb.Transaction, entries: list[tuple[bytes, bytes]]) -> None:
        """Topic entries, vector, last index and count retention for ``entries``."""
        txn.cursor(self.by_topic).putmulti(entries, dupdata=True)
        # Entries are in commit order (an origin's seqs grow): each origin's last is its
        # position, the last one overall is the last index.
        newest = {entry[16:]: entry for _, entry in entries}
        for origin, entry in newest.items():
            txn.put(origin.rstrip(b"\0"), entry[8:16], db=self.origins)
        last = entries[-1][1][:_EIGHT]
        meta_last = cast("bytes | None", txn.get(b"index", db=self.meta))
        if meta_last is None or meta_last < last:  # (big-endian: bytes sort as numbers)
            txn.put(b"index", last, db=self.meta)
        topics = {topic for topic, _ in entries}
        size = self.options.history_size
        cursor = txn.cursor(self.by_topic)
        for topic in topics:
            if cursor.set_key(topic) and cursor.count() > size + TRIM_SLACK:
                self._trim(txn, topic, size)

    def index_now(self) -> None:
        """Index what is not yet (before a sweep, a ``DELETE`` or a clean stop)."""
        if not self._unindexed or self.env is None:
            return
        try:
            with self.env.begin(write=True) as txn:
                self._index(txn)
            del self._unindexed[: self._indexed]
        finally:
            self._indexed = 0

    def _trim(self, txn: lmdb.Transaction, topic: bytes, keep: int) -> None:
        cursor = txn.cursor(self.by_topic)
        if not cursor.set_key(topic):
            return
        extra = cursor.count() - keep
        if extra <= 0:
            return
        # The entries are read in one C loop, then deleted by position, not by value: a
        # trim is most of what count retention costs (one topic at its size: every event
        # in is one out).
        oldest = cast(list[bytes], list(islice(cursor.iternext_dup(keys=False), extra)))
        cursor.set_key(topic)
        remove = cursor.delete
        for _ in oldest:
            remove()
        records = txn.cursor(self.events)
        here, delete, seek = records.key, records.delete, records.set_key
        for entry in oldest:
            key = entry[:_EIGHT]
            # A topic's oldest events often lie next to each other in the log (one busy
            # topic): delete where the cursor already is, else seek.
            if here() == key or seek(key):
                delete()
        # Entries sort by index, so an origin's last one here is its newest evicted (keyed
        # by its origin bytes: decoding every entry cost a third of the trim).
        newest = {entry[16:]: entry for entry in oldest}
        evicted = self._evicted(txn, topic)
        for entry in newest.values():
            origin, seq = _entry_origin_seq(entry)
            if seq > evicted.get(origin, 0):
                evicted[origin] = seq
        txn.put(topic, _pack(evicted), db=self.tmeta)

    def _evicted(self, txn: lmdb.Transaction, topic: bytes) -> dict[str, int]:
        raw = txn.get(topic, db=self.tmeta)
        return msgpack.unpackb(raw) if raw else {}

    def forget(self, topic: str) -> bool:
        """``DELETE /topics/{topic}``: its history, retained events and closed state."""
        assert self.env is not None
        self.index_now()  # every event of the topic in its index, so all of them go
        topic_b = topic.encode()
        found = False
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(self.by_topic)
            if cursor.set_key(topic_b):
                evicted = self._evicted(txn, topic_b)
                for entry in cursor.iternext_dup():
                    txn.delete(entry[:_EIGHT], db=self.events)
                    origin, seq = _entry_origin_seq(entry)
                    evicted[origin] = max(evicted.get(origin, 0), seq)
                txn.delete(topic_b, db=self.by_topic)
                txn.put(topic_b, _pack(evicted), db=self.tmeta)
                found = True
            found = self._clear_retained(txn, topic_b, ...) > 0 or found
            found = txn.delete(topic_b, db=self.final) or found
        return found

    def clear_retained(self, topic: str, event_type: Any) -> int:
        assert self.env is not None
        with self.env.begin(write=True) as txn:
            return self._clear_retained(txn, topic.encode(), event_type)

    def _clear_retained(self, txn: lmdb.Transaction, topic: bytes, event_type: Any) -> int:
        prefix = topic + b"\0"
        if event_type is not ...:  # one type (None: untyped events)
            return int(txn.delete(prefix + (event_type or "").encode(), db=self.retained))
        keys = []
        cursor = txn.cursor(self.retained)
        if cursor.set_range(prefix):
            for key in cast(Iterable[bytes], cursor.iternext(keys=True, values=False)):
                if not key.startswith(prefix):
                    break
                keys.append(key)
        for key in keys:
            txn.delete(key, db=self.retained)
        return len(keys)

    # -- reading ------------------------------------------------------------------------

    def load(self, topics: Iterable[str]) -> list[LoadedTopic]:
        """Read topics back: their newest events (within retention), retained, final."""
        assert self.env is not None
        size = self.options.history_size
        max_age = self.options.max_age_seconds
        cutoff = time.time() - max_age if max_age else 0.0
        out = []
        # Events committed but not indexed yet are newer than every indexed one. The copy
        # is taken before the transaction begins: an entry indexed since is then in both
        # (counted once), and one committed since is in memory already (delivered).
        unindexed: dict[bytes, list[bytes]] = {}
        for topic_b, entry in list(self._unindexed):
            unindexed.setdefault(topic_b, []).append(entry[:_EIGHT])
        with self.env.begin() as txn:
            for topic in topics:
                topic_b = topic.encode()
                evicted = self._evicted(txn, topic_b)
                events: list[Event] = []
                for key in self._keys_newest_first(txn, topic_b, unindexed.get(topic_b, ())):
                    value = txn.get(key, db=self.events)
                    if value is not None:
                        event = _event(int.from_bytes(key, "big"), value)
                        if len(events) < size and event.published_at >= cutoff:
                            events.append(event)
                        else:
                            mark = evicted.get(event.origin, 0)
                            evicted[event.origin] = max(mark, event.seq)
                events.reverse()
                retained: dict[str | None, Event] = {}
                cursor = txn.cursor(self.retained)
                prefix = topic_b + b"\0"
                if cursor.set_range(prefix):
                    for key, value in cursor:
                        if not key.startswith(prefix):
                            break
                        event = _event(0, value)
                        retained[event.event_type] = event
                raw_final = txn.get(topic_b, db=self.final)
                final = _event(0, raw_final) if raw_final is not None else None
                out.append(LoadedTopic(topic, events, evicted, retained, final))
        return out

    def _keys_newest_first(
        self, txn: lmdb.Transaction, topic: bytes, unindexed: Sequence[bytes]
    ) -> Iterator[bytes]:
        """A topic's event keys, newest first: not yet indexed, then from its index."""
        seen = set(unindexed)
        yield from reversed(unindexed)
        cursor = txn.cursor(self.by_topic)
        if cursor.set_key(topic) and cursor.last_dup():
            while True:
                key = cast(bytes, cursor.value())[:_EIGHT]
                if key not in seen:
                    yield key
                if not cursor.prev_dup():
                    break

    # -- retention ----------------------------------------------------------------------

    def bytes_used(self) -> int:
        env = self.env
        if env is None:
            return 0
        stat = env.stat()
        total = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        with env.begin() as txn:
            for db in (
                self.meta,
                self.events,
                self.by_topic,
                self.retained,
                self.final,
                self.tmeta,
                self.origins,
            ):
                s = txn.stat(db)
                total += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
        return total * stat["psize"]

    def sweep(self) -> int:
        """Age, size and TTL retention; return how many events left the store."""
        if self.env is None:
            return 0
        self.index_now()  # what leaves the store leaves its topic's index too
        options = self.options
        now = time.time()
        removed = 0
        if options.max_age_seconds:
            removed += self._drop_oldest(lambda e: e[6] < now - options.max_age_seconds)
        if options.max_bytes:
            target = options.max_bytes * 0.9  # some room, so a sweep is not due at once
            for _ in range(1000):
                used = self.bytes_used()
                if used <= options.max_bytes:
                    break
                with self.env.begin() as txn:
                    entries = txn.stat(self.events)["entries"]
                if not entries:
                    break
                # The oldest events, about as many as the excess holds (estimated).
                count = int((used - target) * entries / used) + 1
                gone = self._drop_oldest(lambda e: True, limit=min(count, 10_000))
                removed += gone
                if not gone:
                    break
        cutoff = now - options.closed_ttl_seconds
        with self.env.begin(write=True) as txn:
            for db in (self.retained, self.final):
                cursor = txn.cursor(db)
                ok = cursor.first()
                while ok:
                    if msgpack.unpackb(cursor.value())[6] < cutoff:
                        ok = cursor.delete()
                        ok = bool(cursor.key())
                    else:
                        ok = cursor.next()
        return removed

    def _drop_oldest(self, old: Any, limit: int = 10_000) -> int:
        assert self.env is not None
        removed = 0
        evicted: dict[bytes, dict[str, int]] = {}
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(self.events)
            ok = cursor.first()
            while ok and removed < limit:
                key = cursor.key()
                record = msgpack.unpackb(cursor.value())
                if not old(record):
                    break
                origin, seq, topic = record[0], record[1], record[2].encode()
                marks = evicted.get(topic)
                if marks is None:
                    marks = evicted[topic] = self._evicted(txn, topic)
                marks[origin] = max(marks.get(origin, 0), seq)
                entry = _entry(int.from_bytes(key, "big"), seq, origin)
                txn.delete(topic, entry, db=self.by_topic)
                cursor.delete()
                removed += 1
                ok = bool(cursor.key())
            for topic, marks in evicted.items():
                txn.put(topic, _pack(marks), db=self.tmeta)
        return removed

    # -- memory -------------------------------------------------------------------------

    def drop_mapped_pages(self) -> int:
        """Take the store file's pages out of this process; return the bytes advised.

        LMDB reads through a shared, read-only map of ``data.mdb`` (no write map): every
        page a commit or a load walks stays mapped and counts in the process's RSS until
        the map closes (100 000 one-event topics: 18 MiB, load/durable.py --expiry).
        ``madvise(MADV_DONTNEED)`` unmaps them: they stay in the page cache, the file is
        untouched, and the next read maps them back from the file (a shared file map
        never refills with zeros). Run in the writer thread (:meth:`Journal.drop_mapped_pages`),
        which alone closes the environment, so the map cannot go away meanwhile.
        """
        libc = _libc()
        if self.env is None or libc is None:
            return 0
        target = os.path.realpath(self.path / "data.mdb")
        size = os.path.getsize(target)
        dropped = 0
        with open("/proc/self/maps") as maps:
            for line in maps:  # start-end perms offset dev inode path
                fields = line.rstrip("\n").split(maxsplit=5)
                if len(fields) < 6 or fields[5] != target:
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                length = min(end - start, size - int(fields[2], 16))
                if length > 0 and libc.madvise(start, length, _MADV_DONTNEED) == 0:
                    dropped += length
        return dropped


_MADV_DONTNEED: Final = 4  # (Linux, every architecture)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, for ``madvise`` (Linux; ``None`` elsewhere: nothing is dropped)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def _verify_in_child(path: Path) -> str | None:
    try:
        child = subprocess.run(
            [sys.executable, storecheck.__file__, str(path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not be checked ({error})"
    if child.returncode == 0:
        return None
    if child.returncode < 0:
        return f"crashes a reader (signal {-child.returncode})"
    lines = child.stdout.strip().splitlines() or child.stderr.strip().splitlines()
    return lines[-1] if lines else f"failed its check (exit {child.returncode})"


def _salvage_in_child(damaged: Path, path: Path) -> int:
    """Copy what can be read of ``damaged`` into the new store at ``path``; how many."""
    try:
        child = subprocess.run(
            [sys.executable, storecheck.__file__, "salvage", str(damaged), str(path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("storage: salvaging %s failed: %s", damaged, error)
        return 0
    counts = [int(line) for line in child.stdout.split() if line.isdigit()]
    if child.returncode != 0:
        log.warning(
            "storage: salvaging %s stopped early (exit %d); what was copied is kept",
            damaged,
            child.returncode,
        )
    return counts[-1] if counts else 0


class Worker:
    """One long-lived thread that runs blocking calls in order; :meth:`call` awaits one.

    A thread fed by a queue costs about half the CPU of ``trio.to_thread.run_sync`` per
    call here (39 against 80 µs: a thread hop per group commit is the biggest fixed cost of
    a durable publish). A call cannot be cancelled once queued: its caller waits for it.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, done = item
            result = outcome.capture(fn, *args)
            self._token.run_sync_soon(done, result)
            del item, fn, args, done, result  # the last batch must not stay alive here

    async def call(self, fn: Any, *args: Any) -> Any:
        task = trio.lowlevel.current_task()
        self._queue.put((fn, args, partial(trio.lowlevel.reschedule, task)))
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def stop(self) -> None:
        self._queue.put(None)


class Journal:
    """The async side of the store: group commits, loads, faults (see the module doc).

    Use :func:`open_journal`; the hub calls :meth:`append` and :meth:`load`.
    """

    def __init__(self, disk: DiskStore, recovered: Recovered) -> None:
        self.disk = disk
        self.options = disk.options
        self.recovered = recovered
        self._writer = Worker("broker-store-writer")
        self._reader = Worker("broker-store-reader")
        self._pending: list[Event] = []
        #: The tasks whose events are in ``_pending``: each is rescheduled with ``None``
        #: once they are delivered, or with why they could not be committed.
        self._waiters: list[trio.lowlevel.Task] = []
        self._committer: trio.lowlevel.Task | None = None
        self._committer_idle = False
        self.problem: str | None = None
        self.commits = 0
        self.loop_commits = 0
        self._writer_calls = 0  # in the writer thread or queued for it
        self.committed_events = 0
        self.failed_commits = 0
        self._hub: Any = None
        self._bytes_used = 0

    def attach(self, hub: Any) -> None:
        """The hub whose ``deliver_committed`` and ``abandon_staged`` this calls."""
        self._hub = hub

    async def append(self, events: list[Event]) -> None:
        """Return once ``events`` are committed and delivered (they go in the next group).

        Raises:
            Unavailable: the store could not write them; nothing was delivered.
        """
        # A bare park and reschedule, not a trio.Event per group: this wait is on every
        # durable publish, and the parking lot's bookkeeping cost about a µs of it.
        self._pending.extend(events)
        task = trio.lowlevel.current_task()
        waiters = self._waiters
        waiters.append(task)
        self._wake_committer()

        def abort(_: Any) -> trio.lowlevel.Abort:
            # Cancelled while waiting (the client went away): the events stay staged and
            # are committed and delivered with their group; only the answer is not given.
            if task in waiters:
                waiters.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED
            return trio.lowlevel.Abort.FAILED  # (already rescheduled by the committer)

        error = await trio.lowlevel.wait_task_rescheduled(abort)
        if error is not None:
            raise Unavailable(error, retry_after=1.0)

    def append_nowait(self, events: list[Event]) -> None:
        """Queue events for the next group without waiting (replicated from peers)."""
        self._pending.extend(events)
        self._wake_committer()

    def _wake_committer(self) -> None:
        if self._committer_idle:
            self._committer_idle = False
            assert self._committer is not None
            trio.lowlevel.reschedule(self._committer)

    async def _wait_for_work(self) -> None:
        if self._pending:
            return
        self._committer_idle = True

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._committer_idle = False  # (so no append reschedules a cancelled task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The committer: one group commit at a time, then delivery, in order."""
        self._committer = trio.lowlevel.current_task()
        task_status.started()
        while True:
            await self._wait_for_work()
            # One more pass of the loop before the group closes: the publishes that the
            # same round of socket reads brings join it. Fewer, bigger commits: at 16
            # connections groups grew from about 11 to 16 events, and a commit's fixed
            # cost is most of its cost.
            await trio.lowlevel.cancel_shielded_checkpoint()
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            if not batch:
                continue
            try:
                if self._commits_in_loop(batch):
                    self.disk.write(batch)
                    self.loop_commits += 1
                else:
                    await self._in_writer(self.disk.write, batch)
            except (lmdb.Error, OSError) as error:
                self.failed_commits += 1
                reason = f"the event store cannot write: {error}"
                if self.problem is None:
                    log.error("storage: %s (publishes get 503 until it can)", reason)
                self.problem = reason
                # Everything staged behind this group has later ids: fail it too, so the
                # ids can be given again without a gap.
                later, self._pending = self._pending, []
                self._hub.abandon_staged(batch + later)
                waiters += self._waiters
                self._waiters = []
                for task in waiters:
                    trio.lowlevel.reschedule(task, outcome.Value(reason))
                continue
            if self.problem is not None:
                log.warning("storage: writing again")
                self.problem = None
            self.commits += 1
            self.committed_events += len(batch)
            self._hub.deliver_committed(batch)
            for task in waiters:
                trio.lowlevel.reschedule(task, outcome.Value(None))
            del batch, waiters  # (not kept alive until the next commit)

    def _commits_in_loop(self, batch: list[Event]) -> bool:
        """Whether to commit ``batch`` here, in the loop, rather than in the writer thread.

        Only without fsync; only a group small enough to stay far below a 5 ms step; and
        only while the writer thread holds no write transaction (a sweep, a forget):
        LMDB has one writer at a time, and the loop must not wait for that lock.
        """
        if self.options.durability != "process" or self._writer_calls or self.disk.env is None:
            return False  # (no environment: a failed commit closed it, the thread reopens it)
        if len(batch) > LOOP_COMMIT_EVENTS:
            return False
        return sum(len(event.data) for event in batch) <= LOOP_COMMIT_CHARS

    async def _in_writer(self, fn: Any, *args: Any) -> Any:
        """Run a write in the writer thread; while it runs, commits stay out of the loop."""
        self._writer_calls += 1
        try:
            return await self._writer.call(fn, *args)
        finally:
            self._writer_calls -= 1  # (a call cannot be cancelled: the thread is done)

    async def sweep_forever(self) -> None:
        """Age, size and TTL retention every ``sweep_seconds``."""
        while True:
            await trio.sleep(self.options.sweep_seconds)
            try:
                await self._in_writer(self.disk.sweep)
                self._bytes_used = await self._reader.call(self.disk.bytes_used)
            except lmdb.Error as error:
                log.warning("storage: retention sweep failed: %s", error)

    async def drop_mapped_pages(self) -> None:
        """Unmap the store's file pages from the process (after many topics left memory)."""
        try:
            await self._in_writer(self.disk.drop_mapped_pages)
        except OSError as error:  # (the file is gone: nothing mapped to drop)
            log.warning("storage: could not drop the store's mapped pages: %s", error)

    async def load(self, topics: Sequence[str]) -> list[LoadedTopic]:
        """Read topics that are not in memory (the reader thread)."""
        try:
            loaded: list[LoadedTopic] = await self._reader.call(self.disk.load, topics)
            return loaded
        except lmdb.Error as error:
            raise Unavailable(f"the event store cannot be read: {error}") from None

    async def forget(self, topic: str) -> bool:
        found: bool = await self._in_writer(self.disk.forget, topic)
        return found

    async def clear_retained(self, topic: str, event_type: Any) -> int:
        cleared: int = await self._in_writer(self.disk.clear_retained, topic, event_type)
        return cleared

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            path=str(self.disk.path),
            durability=self.options.durability,
            commits=self.commits,
            loop_commits=self.loop_commits,
            committed_events=self.committed_events,
            failed_commits=self.failed_commits,
            bytes_used=self._bytes_used,
            problem=self.problem,
        )


@asynccontextmanager
async def open_journal(options: JournalOptions) -> AsyncIterator[Journal]:
    """Open the store (recovering identity), run the committer and the retention sweep.

    The hub must :meth:`Journal.attach` itself before anything is appended. On exit the
    store is marked cleanly shut down.
    """
    disk = DiskStore(options)
    started = time.monotonic()
    recovered = await trio.to_thread.run_sync(disk.open)
    log.info(
        "storage: %s (%s), origin %s, %d events so far, ready in %.2f s%s",
        options.path,
        options.durability,
        recovered.origin,
        recovered.index,
        time.monotonic() - started,
        f"; new origin: {recovered.new_epoch}" if recovered.new_epoch else "",
    )
    journal = Journal(disk, recovered)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            nursery.start_soon(journal.sweep_forever)
            try:
                yield journal
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await journal._writer.call(disk.close)
            journal._writer.stop()
            journal._reader.stop()
