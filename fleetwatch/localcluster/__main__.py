"""``python -m fleetwatch.localcluster up [--root DIR] [--base PORT]``: bring the cluster up,
print where everything listens (JSON), and keep it up until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from fleetwatch.localcluster import Layout, LocalCluster


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fleetwatch.localcluster")
    ap.add_argument("action", choices=["up"])
    ap.add_argument("--root", type=Path, default=Path("var/localcluster"))
    ap.add_argument("--base", type=int, default=20000, help="first port (20000..21900, ×100)")
    ap.add_argument("--web-nodes", type=int, default=2)
    a = ap.parse_args(argv)
    cluster = LocalCluster(a.root.resolve(), Layout(a.base), web_nodes=a.web_nodes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster.up()
    try:
        print(json.dumps(cluster.status(), indent=2), flush=True)
        stop.wait()
    finally:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
