"""Peer brokers replicate over an authenticated msgpack link; clients resume on any node."""

from .node import Cluster as Cluster
from .node import ClusterOptions as ClusterOptions
from .node import open_cluster as open_cluster

__all__ = ["Cluster", "ClusterOptions", "open_cluster"]
