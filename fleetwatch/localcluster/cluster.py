"""The one-machine FleetWatch cluster: etcd, Redis + Sentinel, a Patroni pair, NATS, haproxy.

What it is for: ``deploy/local/cluster-up``, ``fleetwatch bench failover`` and
tests/cluster/test_failover*.py bring the same cluster up with :class:`LocalCluster`, kill its
parts, and take it down. The configuration files are the production templates of
``deploy/templates`` rendered with local values, so what is tested is what is deployed.

Every piece has a readiness check with an explicit time-out (``READY_S``); a piece that does
not come up raises :class:`ClusterError` quoting its log. Services listen on ``0.0.0.0`` at
their own ports so that an engine node inside a network namespace reaches them over its veth
pair (the partition fault takes that link down); PostgreSQL's pg_hba admits only 127.0.0.1 and
the cluster's veth subnet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import string
import subprocess
import time
from pathlib import Path
from typing import Any

from fleetwatch.localcluster.layout import Layout
from fleetwatch.localcluster.proc import ClusterError, Proc, http_json, port_open, wait_until

__all__ = ["READY_S", "LocalCluster", "render", "templates_dir"]

READY_S = {"etcd": 20.0, "redis": 15.0, "sentinel": 15.0, "patroni": 90.0, "nats": 40.0}
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PATRONI = "/usr/bin/patroni"
REDIS_MASTER_NAME = "fleetwatch"


def templates_dir() -> Path:
    """deploy/templates of this checkout (the package runs from the repository)."""
    d = Path(__file__).resolve().parents[2] / "deploy" / "templates"
    if not d.is_dir():
        raise ClusterError(f"deploy templates not found at {d}")
    return d


def render(name: str, **values: object) -> str:
    """A template of deploy/templates with every ``${KEY}`` filled (a missing key raises)."""
    text = (templates_dir() / name).read_text()
    try:
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as e:
        raise ClusterError(f"template {name}: no value for {e}") from None


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    if r.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")


class LocalCluster:
    """The infrastructure of a FleetWatch cluster on this machine, under ``root``.

    ``up()`` starts etcd, Redis master + replica + 3 sentinels, two Patroni/PostgreSQL 15
    nodes, ``nats_nodes`` NATS servers (MQTT + JetStream, clustered) and haproxy (in front of
    ``web_nodes`` web ports, the NATS MQTT ports and the PostgreSQL primary); ``down()`` stops
    every process it started, by PID, and removes its network namespaces.
    """

    def __init__(
        self,
        root: Path,
        layout: Layout | None = None,
        *,
        nats_nodes: int = 3,
        pg_nodes: int = 2,
        web_nodes: int = 2,
        patroni_ttl_s: int = 10,
        fsync: bool = False,
    ) -> None:
        self.root = Path(root)
        self.layout = layout or Layout()
        self.nats_nodes = nats_nodes
        self.pg_nodes = pg_nodes
        self.web_nodes = web_nodes
        self.patroni_ttl_s = patroni_ttl_s
        self.fsync = fsync
        self.procs: dict[str, Proc] = {}
        self.netns: list[str] = []
        self.timings: dict[str, float] = {}

    # -- addresses ---------------------------------------------------------------------------

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.layout.etcd_client}"

    def pg_dsn(self, db: str = "postgres") -> str:
        """Both Patroni nodes; libpq picks the one that accepts writes."""
        hosts = ",".join(f"127.0.0.1:{self.layout.pg(i)}" for i in range(self.pg_nodes))
        return f"postgresql://postgres@{hosts}/{db}?target_session_attrs=read-write"

    def sentinel_url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{self.layout.sentinel(i)}" for i in range(3))
        return f"redis+sentinel://{hosts}/{REDIS_MASTER_NAME}/0"

    @property
    def mqtt_port(self) -> int:
        """The MQTT entry point clients use: haproxy in front of the NATS MQTT ports."""
        return self.layout.haproxy_mqtt

    @property
    def web_port(self) -> int:
        return self.layout.haproxy_web

    # -- life cycle ----------------------------------------------------------------------------

    def up(self, pieces: tuple[str, ...] = ("etcd", "redis", "patroni", "nats", "haproxy")) -> None:
        """Start the pieces in order, each ready before the next; on failure stop everything."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        try:
            for piece in pieces:
                t0 = time.monotonic()
                getattr(self, f"start_{piece}")()
                self.timings[piece] = round(time.monotonic() - t0, 2)
        except BaseException:
            self.down()
            raise

    def down(self, *, graceful: bool = True) -> None:
        """Stop every process this cluster started (reverse order) and remove its namespaces.

        ``graceful=False`` kills -9 (tests and benches throw their data away: a clean
        PostgreSQL shut-down of a pair costs tens of seconds)."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if not graceful:
                if name.startswith("patroni"):
                    self._kill_postmaster(name, sig=signal.SIGKILL)
                proc.kill9()
                continue
            if name.startswith("patroni"):
                self._kill_postmaster(name, sig=signal.SIGTERM)
            proc.stop()
            if name.startswith("patroni"):
                self._kill_postmaster(name, sig=signal.SIGKILL)
        for ns in list(self.netns):
            self.remove_netns(ns)

    def add(self, proc: Proc) -> Proc:
        self.procs[proc.name] = proc
        return proc

    def _dir(self, name: str, owner: str | None = None) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        if owner and os.geteuid() == 0:
            shutil.chown(d, owner, owner)
        return d

    # -- etcd ----------------------------------------------------------------------------------

    def start_etcd(self) -> None:
        lay = self.layout
        peer = f"http://127.0.0.1:{lay.etcd_peer}"
        argv = [
            "/usr/bin/etcd",
            "--name=fw",
            f"--data-dir={self._dir('etcd')}/data",
            f"--listen-client-urls=http://0.0.0.0:{lay.etcd_client}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=fw={peer}",
            "--initial-cluster-state=new",
            "--log-level=warn",
        ]

        def ready() -> bool:
            status, body = http_json(f"{self.etcd_url}/health")
            return status == 200 and isinstance(body, dict) and body.get("health") == "true"

        p = self.add(Proc("etcd", argv, self.root / "logs/etcd.log", ready, READY_S["etcd"]))
        p.start().wait_ready()

    # -- Redis + Sentinel ----------------------------------------------------------------------

    def start_redis(self) -> None:
        lay = self.layout
        for name, port, replicaof in (
            ("redis-master", lay.redis_master, ""),
            ("redis-replica", lay.redis_replica, f"replicaof 127.0.0.1 {lay.redis_master}"),
        ):
            d = self._dir(name)
            conf = d / "redis.conf"
            conf.write_text(
                render("redis.conf", LISTEN_HOST="0.0.0.0", PORT=port, DIR=d, REPLICAOF=replicaof)
            )
            self.add(
                Proc(
                    name,
                    ["/usr/bin/redis-server", str(conf)],
                    self.root / f"logs/{name}.log",
                    _redis_ready(port, replica=bool(replicaof)),
                    READY_S["redis"],
                )
            ).start()
        self.procs["redis-master"].wait_ready()
        self.procs["redis-replica"].wait_ready()
        for i in range(3):
            d = self._dir(f"sentinel{i}")
            conf = d / "sentinel.conf"
            conf.write_text(
                render(
                    "sentinel.conf",
                    LISTEN_HOST="0.0.0.0",
                    PORT=lay.sentinel(i),
                    DIR=d,
                    MASTER_NAME=REDIS_MASTER_NAME,
                    MASTER_HOST="127.0.0.1",
                    MASTER_PORT=lay.redis_master,
                    DOWN_AFTER_MS=2000,
                    FAILOVER_TIMEOUT_MS=10000,
                )
            )
            self.add(
                Proc(
                    f"sentinel{i}",
                    ["/usr/bin/redis-server", str(conf), "--sentinel"],
                    self.root / f"logs/sentinel{i}.log",
                    _sentinel_ready(lay.sentinel(i)),
                    READY_S["sentinel"],
                )
            ).start()
        for i in range(3):
            self.procs[f"sentinel{i}"].wait_ready()

    def redis_master_port(self) -> int | None:
        """The master's port as the sentinels see it (None: no sentinel answers)."""
        import redis

        for i in range(3):
            try:
                r = redis.Redis(port=self.layout.sentinel(i), socket_timeout=0.5)
                addr = r.execute_command("SENTINEL", "get-master-addr-by-name", REDIS_MASTER_NAME)
                r.close()
                if addr:
                    return int(addr[1])
            except redis.RedisError:
                continue
        return None

    # -- Patroni / PostgreSQL --------------------------------------------------------------------

    def start_patroni(self) -> None:
        lay = self.layout
        base = self._dir("patroni", owner="postgres")
        for i in range(self.pg_nodes):
            d = self._dir(f"patroni/pg{i}", owner="postgres")
            conf = d / "patroni.yml"
            conf.write_text(
                render(
                    "patroni.yml",
                    SCOPE=f"fleetwatch-{lay.base}",
                    NAME=f"pg{i}",
                    LISTEN_HOST="0.0.0.0",
                    ADVERTISE_HOST="127.0.0.1",
                    REST_PORT=lay.patroni_rest(i),
                    PG_PORT=lay.pg(i),
                    ETCD_HOSTS=f"127.0.0.1:{lay.etcd_client}",
                    TTL=self.patroni_ttl_s,
                    LOOP_WAIT=1,
                    RETRY_TIMEOUT=max(2, (self.patroni_ttl_s - 2) // 3),
                    MAX_CONNECTIONS=200,
                    FSYNC="on" if self.fsync else "off",
                    CLIENT_NET=lay.client_net,
                    DATA_DIR=d / "data",
                    PGPASS=d / "pgpass",
                    SOCKET_DIR=d,
                    SUPERUSER_PASSWORD="local-only",
                    REPLICATION_PASSWORD="local-only",
                )
            )
            if os.geteuid() == 0:
                shutil.chown(conf, "postgres", "postgres")
            self.add(
                Proc(
                    f"patroni{i}",
                    [PATRONI, str(conf)],
                    self.root / f"logs/patroni{i}.log",
                    None,
                    READY_S["patroni"],
                    user="postgres",
                    cwd=base,
                    env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""},
                )
            ).start()
            if i == 0:
                # the first node bootstraps alone, so it is the primary; the second clones it
                wait_until(lambda: self.pg_roles().get(0) == "primary", READY_S["patroni"], "pg0")
        self.timings["patroni_pair"] = wait_until(
            self.pg_pair_ready, READY_S["patroni"], "Patroni pair (primary + streaming standby)"
        )

    def pg_roles(self) -> dict[int, str]:
        """Each node's role per its REST API: primary, replica, or absent when it is down."""
        roles: dict[int, str] = {}
        for i in range(self.pg_nodes):
            status, body = http_json(f"http://127.0.0.1:{self.layout.patroni_rest(i)}/patroni", 0.5)
            if status == 200 and isinstance(body, dict) and body.get("state") == "running":
                roles[i] = "primary" if body.get("role") in ("master", "primary") else "replica"
        return roles

    def pg_primary(self) -> int | None:
        for i, role in self.pg_roles().items():
            if role == "primary":
                return i
        return None

    def pg_pair_ready(self) -> bool:
        """One primary and one standby streaming (and synchronous) from it."""
        roles = self.pg_roles()
        if sorted(roles.values()) != ["primary", "replica"]:
            return False
        primary = next(i for i, r in roles.items() if r == "primary")
        status, body = http_json(f"http://127.0.0.1:{self.layout.patroni_rest(primary)}/cluster")
        if status != 200 or not isinstance(body, dict):
            return False
        members = body.get("members", [])
        return any(
            m.get("role") == "sync_standby" and m.get("state") in ("streaming", "running")
            for m in members
        )

    def _postmaster_pid(self, name: str) -> int | None:
        i = int(name.removeprefix("patroni"))
        pidfile = self.root / f"patroni/pg{i}/data/postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _kill_postmaster(self, name: str, sig: int) -> None:
        pid = self._postmaster_pid(name)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def kill_pg_node(self, i: int) -> None:
        """The fault "PostgreSQL primary killed": Patroni and its postmaster, kill -9, as if
        the machine died (killing only postgres would have Patroni restart it in place)."""
        name = f"patroni{i}"
        pid = self._postmaster_pid(name)
        self.procs[name].kill9()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def restart_pg_node(self, i: int) -> None:
        """Bring a killed node back (Patroni rewinds it and it rejoins as the standby)."""
        self.procs[f"patroni{i}"].start()

    # -- NATS ----------------------------------------------------------------------------------

    def start_nats(self) -> None:
        lay = self.layout
        n = self.nats_nodes
        for i in range(n):
            d = self._dir(f"nats{i}")
            routes = "\n".join(
                f"    nats-route://127.0.0.1:{lay.nats_cluster(j)}" for j in range(n) if j != i
            )
            conf = d / "nats.conf"
            conf.write_text(
                render(
                    "nats.conf",
                    NAME=f"n{i}",
                    LISTEN_HOST="0.0.0.0",
                    CLIENT_PORT=lay.nats_client(i),
                    MONITOR_HOST="127.0.0.1",
                    MONITOR_PORT=lay.nats_monitor(i),
                    STORE_DIR=d / "js",
                    CLUSTER_NAME=f"fleetwatch-{lay.base}",
                    CLUSTER_HOST="127.0.0.1",
                    CLUSTER_PORT=lay.nats_cluster(i),
                    ROUTES=routes,
                    MQTT_PORT=lay.nats_mqtt(i),
                    ACK_WAIT="5s",
                    MAX_ACK_PENDING=1000,
                    REPLICAS=min(3, n),
                )
            )
            self.add(
                Proc(
                    f"nats{i}",
                    ["/usr/sbin/nats-server", "-c", str(conf)],
                    self.root / f"logs/nats{i}.log",
                    self._nats_ready(i),
                    READY_S["nats"],
                )
            ).start()
        for i in range(n):
            self.procs[f"nats{i}"].wait_ready()

    def _nats_ready(self, i: int) -> Any:
        def ready() -> bool:
            mon = f"http://127.0.0.1:{self.layout.nats_monitor(i)}"
            status, _ = http_json(f"{mon}/healthz?js-enabled-only=true")
            if status != 200:
                return False
            _, routez = http_json(f"{mon}/routez")
            if not isinstance(routez, dict) or routez.get("num_routes", 0) < self.nats_nodes - 1:
                return False
            _, jsz = http_json(f"{mon}/jsz")
            leader = isinstance(jsz, dict) and (jsz.get("meta_cluster") or {}).get("leader")
            return bool(leader) and port_open("127.0.0.1", self.layout.nats_mqtt(i))

        return ready

    def nats_ready(self, i: int) -> bool:
        return bool(self._nats_ready(i)())

    # -- Mosquitto (the single broker people run today; the bench's default load path) -----

    def start_mosquitto(self) -> None:
        """deploy/mosquitto.conf on this cluster's port, anonymous, persisting under root."""
        import re

        d = self._dir("mosquitto", owner="mosquitto")
        text = (templates_dir().parent / "mosquitto.conf").read_text()
        port = self.layout.mosquitto
        text = re.sub(r"^listener \d+.*$", f"listener {port} 0.0.0.0", text, flags=re.M)
        text = re.sub(r"^persistence_location .*$", f"persistence_location {d}/", text, flags=re.M)
        text = re.sub(r"^allow_anonymous false$", "allow_anonymous true", text, flags=re.M)
        text = re.sub(r"^password_file .*$", "", text, flags=re.M)
        conf = d / "mosquitto.conf"
        conf.write_text(text)
        p = self.add(
            Proc(
                "mosquitto",
                ["/usr/sbin/mosquitto", "-c", str(conf)],
                self.root / "logs/mosquitto.log",
                lambda: port_open("127.0.0.1", port),
            )
        )
        p.start().wait_ready()

    # -- haproxy -------------------------------------------------------------------------------

    def start_haproxy(self) -> None:
        lay = self.layout
        d = self._dir("haproxy")
        web = "\n".join(
            f"    server web{i} 127.0.0.1:{lay.web_http(i)} check" for i in range(self.web_nodes)
        )
        mqtt = "\n".join(
            f"    server nats{i} 127.0.0.1:{lay.nats_mqtt(i)} check" for i in range(self.nats_nodes)
        )
        pg = "\n".join(
            f"    server pg{i} 127.0.0.1:{lay.pg(i)} check port {lay.patroni_rest(i)}"
            for i in range(self.pg_nodes)
        )
        conf = d / "haproxy.cfg"
        conf.write_text(
            render(
                "haproxy.cfg",
                MAXCONN=4096,
                STATS_SOCKET=d / "admin.sock",
                BIND_HOST="0.0.0.0",
                WEB_PORT=lay.haproxy_web,
                MQTT_PORT=lay.haproxy_mqtt,
                PG_PORT=lay.haproxy_pg,
                STATS_HOST="127.0.0.1",
                STATS_PORT=lay.haproxy_stats,
                WEB_SERVERS=web,
                MQTT_SERVERS=mqtt,
                PG_SERVERS=pg,
            )
        )
        _run(["/usr/sbin/haproxy", "-c", "-q", "-f", str(conf)])

        def ready() -> bool:
            return port_open("127.0.0.1", lay.haproxy_stats) and port_open(
                "127.0.0.1", lay.haproxy_mqtt
            )

        p = self.add(
            Proc("haproxy", ["/usr/sbin/haproxy", "-db", "-f", str(conf)], d / "haproxy.log", ready)
        )
        p.start().wait_ready()

    # -- network namespaces (the partition fault) ----------------------------------------------

    def add_netns(self, i: int) -> str:
        """Namespace ``i`` with a veth pair to this one: the node inside sees the services at
        :meth:`Layout.veth_host_ip`; :meth:`cut` takes the link down."""
        lay = self.layout
        ns = lay.netns(i)
        host_if, node_if = f"{ns}h", f"{ns}n"
        if ns in self.netns:
            return ns
        self.remove_netns(ns)  # a namespace left by a run that was killed
        _run(["ip", "netns", "add", ns])
        self.netns.append(ns)
        _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if])
        _run(["ip", "link", "set", node_if, "netns", ns])
        _run(["ip", "addr", "add", f"{lay.veth_host_ip(i)}/30", "dev", host_if])
        _run(["ip", "link", "set", host_if, "up"])
        _run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ip",
                "addr",
                "add",
                f"{lay.veth_node_ip(i)}/30",
                "dev",
                node_if,
            ]
        )
        _run(["ip", "netns", "exec", ns, "ip", "link", "set", node_if, "up"])
        _run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
        return ns

    def cut(self, i: int) -> None:
        """The network partition: the veth link of namespace ``i`` goes down."""
        _run(["ip", "link", "set", f"{self.layout.netns(i)}h", "down"])

    def heal(self, i: int) -> None:
        _run(["ip", "link", "set", f"{self.layout.netns(i)}h", "up"])

    def remove_netns(self, ns: str) -> None:
        subprocess.run(["ip", "link", "del", f"{ns}h"], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        if ns in self.netns:
            self.netns.remove(ns)

    # -- report --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "procs": {n: {"pid": p.pid, "alive": p.alive()} for n, p in self.procs.items()},
            "pg_roles": self.pg_roles() if "patroni0" in self.procs else {},
            "redis_master_port": self.redis_master_port() if "sentinel0" in self.procs else None,
            "etcd": self.etcd_url,
            "pg_dsn": self.pg_dsn(),
            "redis_url": self.sentinel_url(),
            "mqtt": f"127.0.0.1:{self.mqtt_port}",
            "web": f"http://127.0.0.1:{self.web_port}",
            "startup_s": self.timings,
        }


def _redis_ready(port: int, *, replica: bool) -> Any:
    def ready() -> bool:
        import redis

        r = redis.Redis(port=port, socket_timeout=0.5)
        try:
            if not replica:
                return bool(r.ping())
            info = r.info("replication")
            return info.get("master_link_status") == "up"
        finally:
            r.close()

    return ready


def _sentinel_ready(port: int) -> Any:
    def ready() -> bool:
        import redis

        r = redis.Redis(port=port, socket_timeout=0.5)
        try:
            m = r.execute_command("SENTINEL", "master", REDIS_MASTER_NAME)
            raw = dict(zip(m[::2], m[1::2], strict=False)) if isinstance(m, list) else dict(m)
            fields = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}
            others = int(fields.get("num-other-sentinels") or 0)
            replicas = int(fields.get("num-slaves") or 0)
            return others >= 2 and replicas >= 1
        finally:
            r.close()

    return ready
