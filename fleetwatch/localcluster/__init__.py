"""The one-machine FleetWatch cluster (issue 19): the infrastructure, its faults, its nodes.

``LocalCluster`` starts etcd, Redis + Sentinel, a Patroni pair of PostgreSQL 15, a NATS
cluster with MQTT + JetStream and haproxy from the production templates in
``deploy/templates``; ``deploy/local/cluster-up``, ``fleetwatch bench failover`` and
tests/cluster/test_failover*.py use it.
"""

from fleetwatch.localcluster.cluster import LocalCluster, render
from fleetwatch.localcluster.layout import Layout
from fleetwatch.localcluster.proc import ClusterError, Proc

__all__ = ["ClusterError", "Layout", "LocalCluster", "Proc", "render"]
