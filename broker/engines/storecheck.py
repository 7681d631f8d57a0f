"""Is the durable store's file whole? Run as a script in a child process (``durable.py``).

LMDB reads its file through a memory map, so a truncated or scribbled file can kill the
process that reads it (SIGBUS, SIGSEGV). The broker therefore checks the file in a child
first: ``python storecheck.py PATH`` exits 0 when the store is sound (or new), and
otherwise prints what is wrong and exits 1 (or dies by a signal, which says as much).
The file must be as long as its metadata says; after a run that did not stop cleanly
every record is read once. This script imports nothing of the broker, so it starts fast.
``python storecheck.py salvage DAMAGED NEW`` copies what can still be read into a new
store (also in a child: reading a damaged file may kill the reader; what was copied by
then stays).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import lmdb
import msgpack

_TABLES = (b"meta", b"origins", b"events", b"by_topic", b"retained", b"final", b"tmeta")
_RECORDS = (b"events", b"retained", b"final")


def verify(path: str) -> str | None:
    """What is wrong with the store under ``path``, or ``None``."""
    env = lmdb.open(path, readonly=True, lock=False, max_dbs=8, map_size=1 << 40)
    try:
        size = os.path.getsize(os.path.join(path, "data.mdb"))
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if size < needed:
            return f"is truncated ({size} bytes of {needed})"
        with env.begin() as txn:
            names = [key for key, _ in txn.cursor()]
            unknown = [n for n in names if n not in _TABLES]
            if unknown:
                return f"holds an unknown table {unknown[0][:40]!r}"
            if b"meta" not in names:
                return None  # created, never written
            meta = env.open_db(b"meta", txn=txn, create=False)
            clean = txn.get(b"clean", db=meta) == b"1"
            for name in names if not clean else [n for n in names if n in _TABLES[:2]]:
                db = env.open_db(name, txn=txn, create=False, dupsort=name == b"by_topic")
                for _key, value in txn.cursor(db):
                    if name in _RECORDS:
                        record = msgpack.unpackb(value)
                        if not isinstance(record, list) or len(record) != 9:
                            return f"holds a damaged record in {name.decode()}"
        return None
    finally:
        env.close()


def salvage(src: str, dst: str, batch: int = 1000) -> int:
    """Copy what can be read of the damaged store ``src`` into a new store ``dst``.

    Every event record that reads back whole is copied with its topic index entry, then
    the retained and closed state; the position vector is rebuilt from the events copied.
    Commits go every ``batch`` records, so if reading kills this process (a truncated
    file), what was copied before stays. Prints and returns how many events were copied.
    """
    source = lmdb.open(src, readonly=True, lock=False, max_dbs=8, map_size=1 << 40)
    target = lmdb.open(dst, max_dbs=8, map_size=1 << 40, sync=False)
    tables = {
        name: target.open_db(name, dupsort=name == b"by_topic", dupfixed=name == b"by_topic")
        for name in _TABLES
    }
    copied = 0
    vector: dict[str, int] = {}
    last_index = 0
    with source.begin() as read:
        names = [key for key, _ in read.cursor()]

        def records(name: bytes) -> Iterator[tuple[bytes, bytes]]:
            if name not in names:
                return
            db = source.open_db(name, txn=read, create=False)
            yield from read.cursor(db)

        pending: list[tuple[bytes, bytes, bytes, bytes]] = []
        for key, value in records(b"events"):
            try:
                record = msgpack.unpackb(value)
            except (ValueError, TypeError, msgpack.UnpackException):
                continue
            if not isinstance(record, list) or len(record) != 9:
                continue
            origin, seq, topic = record[0], record[1], record[2]
            entry = key + seq.to_bytes(8, "big") + origin.encode().ljust(16, b"\0")
            pending.append((key, value, topic.encode(), entry))
            vector[origin] = max(vector.get(origin, 0), seq)
            last_index = int.from_bytes(key, "big")
            if len(pending) >= batch:
                copied += _copy(target, tables, pending, vector, last_index)
                print(copied, flush=True)
                pending = []
        copied += _copy(target, tables, pending, vector, last_index)
        for name in (b"retained", b"final", b"tmeta", b"meta"):
            with target.begin(write=True) as write:
                for key, value in records(name):
                    if name == b"meta" and key not in (b"origin", b"retired"):
                        continue  # the rest was rebuilt from the events
                    try:
                        if name in _RECORDS and len(msgpack.unpackb(value)) != 9:
                            continue
                    except (ValueError, TypeError, msgpack.UnpackException):
                        continue
                    write.put(key, value, db=tables[name])
    target.sync(True)
    target.close()
    source.close()
    print(copied, flush=True)
    return copied


def _copy(
    target: Any,
    tables: dict[bytes, Any],
    pending: list[tuple[bytes, bytes, bytes, bytes]],
    vector: dict[str, int],
    last_index: int,
) -> int:
    with target.begin(write=True) as write:
        for key, value, topic, entry in pending:
            write.put(key, value, db=tables[b"events"])
            write.put(topic, entry, db=tables[b"by_topic"], dupdata=True)
        for origin, seq in vector.items():
            write.put(origin.encode(), seq.to_bytes(8, "big"), db=tables[b"origins"])
        write.put(b"index", last_index.to_bytes(8, "big"), db=tables[b"meta"])
        write.put(b"clean", b"0", db=tables[b"meta"])
    return len(pending)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "salvage":
        salvage(argv[1], argv[2])
        return 0
    if len(argv) != 1:
        print("usage: python storecheck.py PATH | salvage DAMAGED NEW")
        return 2
    try:
        problem = verify(argv[0])
    except (lmdb.Error, ValueError, TypeError, msgpack.UnpackException) as error:
        problem = f"cannot be read ({type(error).__name__}: {error})"
    if problem:
        print(problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
