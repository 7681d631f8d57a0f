from broker.hub.mailbox import Mailbox


def test_drops_oldest_by_count_and_reports_once():
    box = Mailbox(max_events=3, max_bytes=10_000)
    for n in range(5):
        box.put_nowait(f"f{n}".encode(), f"id{n}")
    frames, last_id, dropped = box.take(10_000)
    assert frames == [b"f2", b"f3", b"f4"]
    assert (last_id, dropped) == ("id4", 2)
    assert box.take(10_000) == ([], None, 0)
    stats = box.statistics()
    assert (stats.depth, stats.peak, stats.dropped) == (0, 3, 2)


def test_drops_oldest_by_bytes_but_keeps_the_newest():
    box = Mailbox(max_events=100, max_bytes=10)
    box.put_nowait(b"aaaa", "1")
    box.put_nowait(b"bbbb", "2")
    box.put_nowait(b"cccccc", "3")
    assert box.statistics().depth_bytes == 10
    box.put_nowait(b"x" * 50, "4")  # larger than the bound: held alone
    frames, _last_id, dropped = box.take(1000)
    assert frames == [b"x" * 50]
    assert dropped == 3


def test_take_batches_by_bytes_and_always_takes_one():
    box = Mailbox(max_events=100, max_bytes=10_000)
    for n in range(10):
        box.put_nowait(b"x" * 100, str(n))
    frames, last_id, _ = box.take(250)
    assert len(frames) == 2
    assert last_id == "1"
    frames, _, _ = box.take(1)
    assert len(frames) == 1
