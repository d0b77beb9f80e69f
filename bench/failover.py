#!/usr/bin/env python3
"""Failover time of controllers sharing an etcd store, over repeated
leader kills.

A real 3-member etcd cluster (Debian's etcd-server) and three controllers
(plain HTTP on loopback, each with its own data directory and a copy of the
installation key) run on this host. Each round finds the leader (the
candidate key etcd created first under the election prefix), kills it
with SIGKILL, and measures the time until another controller serves as the
leader: its `/healthz` answers 200 (a controller standing by answers 503
to everything). The killed controller is started again, and the next
round waits until it stands by. The floor is the lease TTL: etcd only
deletes the dead leader's key when its lease expires.

Usage: bench/failover.py [--kills 20] [--ttl 10]
Prints a Markdown table and writes bench/out/failover.json. Needs etcd and
etcdctl (scripts/docker-setup.sh --tests installs them) and Python 3's
standard library; builds the release binary itself.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from apply import ROOT, git_state, release_binary  # noqa: E402

JOIN = "bench-join-token-0123456789"
API = "bench-api-token-0123456789"
PREFIX = "/reconcile/failover-bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(d, n=3):
    members = [(f"m{i}", free_port(), free_port()) for i in range(n)]
    initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in members)
    procs = []
    for name, client, peer in members:
        log = open(os.path.join(d, f"{name}.log"), "w")
        procs.append(subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", os.path.join(d, name),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", "failover-bench"],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True))
    endpoints = ",".join(f"127.0.0.1:{c}" for _, c, _ in members)
    deadline = time.time() + 30
    while time.time() < deadline:
        r = subprocess.run(["etcdctl", "--endpoints", endpoints, "put", "/health", "ok"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "ETCDCTL_API": "3"})
        if r.returncode == 0:
            return procs, endpoints
        time.sleep(0.2)
    sys.exit("etcd did not become healthy")


def leader_url(endpoints):
    r = subprocess.run(
        ["etcdctl", "--endpoints", endpoints, "--command-timeout=2s", "get",
         f"{PREFIX}/election/", "--prefix", "--sort-by=CREATE", "--order=ASCEND",
         "--print-value-only"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "ETCDCTL_API": "3"})
    lines = r.stdout.decode().split()
    return lines[0] if lines else None


def healthz(url):
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=0.5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


class Controller:
    def __init__(self, binary, d, i, endpoints, ttl):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = os.path.join(d, f"data{i}")
        self.log = os.path.join(d, f"c{i}.log")
        src = os.path.join(d, "src")
        self.cmd = [binary, "controller", "--source", src, "--data-dir", self.data,
                    "--store", f"etcd://{endpoints}", "--store-prefix", PREFIX,
                    "--lease-ttl", str(ttl), "--listen", f"127.0.0.1:{self.port}",
                    "--advertise-url", self.url, "--plain-http", "--interval", "5"]
        self.proc = None

    def start(self):
        env = {**os.environ, "RECONCILE_JOIN_TOKEN": JOIN, "RECONCILE_API_TOKEN": API}
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "a"), start_new_session=True)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--ttl", type=int, default=10)
    a = ap.parse_args()
    for tool in ("etcd", "etcdctl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: scripts/docker-setup.sh --tests installs it")
    binary = release_binary()
    d = tempfile.mkdtemp(prefix="failover-")
    os.makedirs(os.path.join(d, "src"))
    with open(os.path.join(d, "src", "cluster.yaml"), "w") as f:
        f.write("apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: bench}\nspec: {}\n")
    etcd, endpoints = start_etcd(d)
    cs = [Controller(binary, d, i, endpoints, a.ttl) for i in range(3)]
    times = []
    try:
        cs[0].start()
        key = os.path.join(cs[0].data, "secrets.key")
        deadline = time.time() + 30
        while not (os.path.exists(key) and healthz(cs[0].url) == 200):
            if time.time() > deadline:
                sys.exit(f"the first controller did not lead; see {cs[0].log}")
            time.sleep(0.1)
        for c in cs[1:]:
            os.makedirs(c.data, exist_ok=True)
            shutil.copy(key, os.path.join(c.data, "secrets.key"))
            c.start()
        for k in range(a.kills):
            # Every controller up, one leading, the others standing by.
            deadline = time.time() + 60
            while True:
                codes = [healthz(c.url) for c in cs]
                if sorted(codes, key=lambda c: c or 0) == [200, 503, 503]:
                    break
                if time.time() > deadline:
                    sys.exit(f"round {k}: controllers answer {codes}; logs in {d}")
                time.sleep(0.1)
            url = leader_url(endpoints)
            leader = next(c for c in cs if c.url == url)
            leader.kill()
            t0 = time.monotonic()
            deadline = t0 + a.ttl + 30
            while True:
                if any(healthz(c.url) == 200 for c in cs if c is not leader):
                    break
                if time.monotonic() > deadline:
                    sys.exit(f"round {k}: no new leader; logs in {d}")
                time.sleep(0.02)
            took = time.monotonic() - t0
            times.append(took)
            print(f"kill {k + 1}: a new leader serves after {took:.2f} s", file=sys.stderr)
            leader.start()
    finally:
        for c in cs:
            if c.proc and c.proc.poll() is None:
                c.kill()
        for p in etcd:
            p.kill()
            p.wait()
    result = {
        "kills": a.kills, "ttl_s": a.ttl,
        "median_s": statistics.median(times), "max_s": max(times), "min_s": min(times),
        "times_s": times, "git": git_state(),
    }
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "failover.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"\n| leader kills | lease TTL | failover median | max | min | median - TTL |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {a.kills} | {a.ttl} s | {result['median_s']:.2f} s | {result['max_s']:.2f} s "
          f"| {result['min_s']:.2f} s | {result['median_s'] - a.ttl:.2f} s |")
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
