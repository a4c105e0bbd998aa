"""Engine nodes owning partitions of the fleet through etcd leases (issue 19).

* :mod:`fleetwatch.cluster.ownership` — the pure ownership and step-down state machine
  (time passed in; no I/O): which partitions to claim, start, stop, release.
* :mod:`fleetwatch.cluster.etcd` — the etcd adapter over etcd3gw (lease, node key, the
  create-if-absent transaction of a partition's owner key, the listing).
* :mod:`fleetwatch.cluster.partition` — one owned partition's pipeline (its own MQTT
  session, rules engine and rule state, restored and replayed on takeover).
* :mod:`fleetwatch.cluster.node` — ``fleetwatch engine``: the loop driving the machine
  with the adapter, the partitions, the command bus and ``/health``.

See docs/cluster.md.
"""
