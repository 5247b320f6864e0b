"""Real servers for the multi-worker benchmarks: a PostgreSQL (pip-installed pgserver), an
`mlflow server` on loopback and a Ray head, started the way the tests start them, and stopped together.
A module of its own so the fault driver (benchmarks/faults.py) holds only the driving and the checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(work: Path, servers: list):
    """A real PostgreSQL (pip-installed pgserver) on a Unix socket, as tests/conftest.py starts it."""
    import pgserver

    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    servers.append(("pg", server))
    for db in ("optuna", "mlflow"):
        server.psql(f"CREATE DATABASE {db} OWNER postgres;")
    sock = server.get_uri().split("host=", 1)[1]
    return lambda db: f"postgresql://postgres:@/{db}?host={sock}"


def start_mlflow_server(backend_uri: str, work: Path, servers: list, port: int | None = None) -> str:
    """`mlflow server` on loopback, proxying artifacts (--serve-artifacts), waited for on /health;
    `port`: a given one (the same server started again after an outage), else a free one."""
    port = port or free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    log = open(work / "mlflow-server.log", "a")
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", backend_uri, "--serve-artifacts",
                             "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    servers.append(("mlflow", proc))
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not start: see {work / 'mlflow-server.log'}")
        time.sleep(0.5)


def start_ray_head(cpus: int, servers: list) -> str:
    """`ray start --head` with `cpus` CPUs, in a session of its own (stopped by its process group, not by
    `ray stop`, which would stop every Ray on the machine); returns its address."""
    import tempfile

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head",
                             "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0",
                             "--object-store-memory=100000000", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    servers.append(("ray", proc))
    output = proc.communicate(timeout=180)[0]
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed:\n{output}")
    return f"127.0.0.1:{port}"


def stop_servers(servers: list) -> None:
    for kind, s in reversed(servers):
        try:
            if kind == "pg":
                s.cleanup()
            elif kind == "ray":  # `ray start` has exited; its processes keep its process group
                for signum, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
                    try:
                        os.killpg(s.pid, signum)
                    except ProcessLookupError:
                        break
                    time.sleep(wait_s)
            elif s.poll() is None:
                os.killpg(s.pid, signal.SIGTERM)
                s.wait(timeout=30)
        except Exception as exc:  # cleanup must not hide the result
            print(f"warning: stopping {kind}: {exc}", file=sys.stderr)
