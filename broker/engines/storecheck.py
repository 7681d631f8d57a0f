"""Is the durable store's file whole? Run as a script in a child process (``durable.py``).

LMDB reads its file through a memory map, so a truncated or scribbled file can kill the
process that reads it (SIGBUS, SIGSEGV). The broker therefore checks the file in a child
first: ``python storecheck.py PATH`` exits 0 when the store is sound (or new), and
otherwise prints what is wrong and exits 1 (or dies by a signal, which says as much).
The file must be as long as its metadata says; after a run that did not stop cleanly
every record is read once. This script imports nothing of the broker, so it starts fast.
"""

from __future__ import annotations

import os
import sys

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


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python storecheck.py PATH")
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
