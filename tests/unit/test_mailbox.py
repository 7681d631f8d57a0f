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


def test_reservations_share_the_budget_and_push_events_out():
    """Replies reserve room: queued events make way, oldest first (issue 17)."""
    box = Mailbox(max_events=4, max_bytes=100)
    for n in range(4):
        box.put_nowait(b"e" * 20, str(n))
    assert box.reserve(50)  # 80 + 50 > 100: the two oldest events go
    frames, last_id, dropped = box.take(1000)
    assert (len(frames), last_id, dropped) == (2, "3", 2)
    assert box.reserve(50)
    assert not box.reserve(1)  # the reservations alone fill the budget: refused
    assert (box.reserved_bytes, box.reserved_frames) == (100, 2)
    box.put_nowait(b"e" * 20, "4")  # one event is always held, even over the bound
    assert box.statistics().depth == 1
    box.release(100, 2)
    assert box.reserve(60)


def test_reservations_count_against_the_frame_bound():
    box = Mailbox(max_events=3, max_bytes=10_000)
    assert box.reserve(1)
    assert box.reserve(1)
    assert box.reserve(1)
    assert not box.reserve(1)
    box.clear()
    assert box.reserve(1)


def test_waiting_since_keeps_the_oldest_drop_until_the_next_take():
    box = Mailbox(max_events=2, max_bytes=10_000)
    assert box.waiting_since() is None
    box.put_nowait(b"a", "1", 10.0)
    box.put_nowait(b"b", "2", 11.0)
    assert box.waiting_since() == 10.0
    for n in range(3, 8):  # a client that stopped reading: drops go on
        box.put_nowait(b"x", str(n), float(n + 9))
    assert box.oldest() == 15.0  # the queue spans only the newest frames...
    assert box.waiting_since() == 10.0  # ...but the client has waited since the first one
    box.take(10_000)  # the drop notice goes out with the batch
    assert box.waiting_since() is None
    box.put_nowait(b"c", "8", 20.0)
    assert box.waiting_since() == 20.0
    box.clear()
    assert box.waiting_since() is None
