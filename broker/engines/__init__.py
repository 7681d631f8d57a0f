"""engines: where events are ordered and kept, behind the interface in ``core.engine``.

The one-node default keeps history in the hub itself; the gossip mesh (``broker.cluster``)
replicates on top of it; ``redis`` keeps events in Redis streams.
"""
