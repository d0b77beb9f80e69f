#!/usr/bin/env python3
"""Heartbeat latency and controller CPU at N nodes, over TLS and over plain
HTTP, side by side in one run.

Each simulated node does what an agent does: it joins once with the join
token (`POST /v1/join`, which gives it its own credential), then sends a
heartbeat every second with that credential over one kept-alive
connection (HTTPS with the controller's CA pinned by file, or plain HTTP),
and reads the reply. A sample is the time from writing a heartbeat to
having read its whole reply. The controller's CPU time (user + system,
from /proc) is read at the start and end of the measured window. Nodes
report no tasks, so what is measured is the API's own cost: TLS records,
authentication by credential, JSON, the membership lock.

Modes alternate (plain, tls, plain, tls, ...) for `--rounds` rounds, each
with a fresh controller and data directory, so drift in the machine's load
touches both alike.

Usage: bench/heartbeat.py [--nodes 100] [--seconds 30] [--warmup 10]
                          [--rounds 2]
Prints a Markdown table and writes bench/out/heartbeat.json. Needs
openssl (for the test CA) and Python 3's standard library; builds the
release binary itself.
"""
import argparse
import http.client
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from apply import ROOT, git_state, release_binary, run, stop_groups  # noqa: E402

JOIN = "bench-join-token-0123456789"
API = "bench-api-token-0123456789"
CLUSTER = "bench"


def make_pki(d):
    """A CA and a server certificate for 127.0.0.1 (ECDSA P-256)."""
    def ossl(*a):
        run(["openssl", *a])
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{d}/ca.key")
    ossl("req", "-x509", "-new", "-key", f"{d}/ca.key", "-subj", "/CN=bench CA",
         "-days", "2", "-out", f"{d}/ca.pem")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{d}/server.key")
    ossl("req", "-new", "-key", f"{d}/server.key", "-subj", "/CN=127.0.0.1",
         "-out", f"{d}/server.csr")
    with open(f"{d}/san.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey",
         f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{d}/san.ext",
         "-out", f"{d}/server.pem")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def supports(binary, flag):
    out = subprocess.run([binary, "controller", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout.decode()
    return flag in out


def start_controller(binary, d, mode, port):
    src = os.path.join(d, "src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "cluster.yaml"), "w") as f:
        f.write(f"apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {{name: {CLUSTER}}}\nspec: {{}}\n")
    cmd = [binary, "controller", "--source", src, "--data-dir", os.path.join(d, "data"),
           "--listen", f"127.0.0.1:{port}", "--heartbeat-ms", "1000",
           "--node-timeout", "10", "--interval", "30", "--log-level", "warn"]
    if mode == "tls":
        cmd += ["--tls-cert", f"{d}/server.pem", "--tls-key", f"{d}/server.key"]
    elif supports(binary, "--plain-http"):
        cmd += ["--plain-http"]
    env = dict(os.environ, RECONCILE_JOIN_TOKEN=JOIN, RECONCILE_API_TOKEN=API)
    log = open(os.path.join(d, f"controller-{mode}.log"), "w")
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return p
        except OSError:
            time.sleep(0.1)
    stop_groups([p])
    sys.exit(f"the controller did not listen; see {log.name}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); index 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RateLimited(Exception):
    def __init__(self, wait):
        super().__init__(f"rate-limited for {wait} s")
        self.wait = wait


class Node(threading.Thread):
    """One simulated agent: join, then a heartbeat a second."""

    def __init__(self, name, port, context, window, stop):
        super().__init__(daemon=True)
        self.name, self.port, self.context = name, port, context
        self.window, self.stop = window, stop
        self.samples, self.errors, self.join_ms = [], 0, None

    def connect(self):
        if self.context:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def call(self, conn, path, token, body):
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status == 429:
            raise RateLimited(float(r.getheader("Retry-After", "1")))
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {data[:200]!r}")
        return json.loads(data)

    def run(self):
        conn = self.connect()
        # Joins are rate-limited per address, and every simulated node
        # has this one: wait as told, as an agent does.
        for _ in range(30):
            t = time.perf_counter()
            try:
                token = self.call(conn, "/v1/join", JOIN, {"name": self.name, "cluster": CLUSTER})["token"]
                break
            except RateLimited as e:
                conn.close()
                time.sleep(e.wait)
                conn = self.connect()
            except Exception as e:  # noqa: BLE001
                print(f"{self.name}: join failed: {e}", file=sys.stderr)
                self.errors += 1
                return
        else:
            print(f"{self.name}: still rate-limited after 30 tries", file=sys.stderr)
            self.errors += 1
            return
        self.join_ms = (time.perf_counter() - t) * 1000
        hb = {"cluster": CLUSTER, "cpu": 2048, "memory": 4096, "agentVersion": "bench",
              "tasks": [], "compact": True}
        # Spread the nodes over the second, as agents started at different
        # times are.
        next_at = time.monotonic() + random.random()
        while not self.stop.is_set():
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += 1.0
            t = time.perf_counter()
            try:
                self.call(conn, f"/v1/nodes/{self.name}/heartbeat", token, hb)
            except Exception:  # noqa: BLE001
                self.errors += 1
                conn.close()
                conn = self.connect()
                continue
            ms = (time.perf_counter() - t) * 1000
            if self.window[0] <= time.monotonic() < self.window[1]:
                self.samples.append(ms)
        conn.close()


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, max(0, -(-p * len(s) // 100) - 1))]


def measure(binary, d, mode, nodes, seconds, warmup):
    port = free_port()
    ctl = start_controller(binary, d, mode, port)
    context = None
    if mode == "tls":
        context = ssl.create_default_context(cafile=f"{d}/ca.pem")
    stop = threading.Event()
    window = [float("inf"), float("inf")]
    threads = [Node(f"n{i:03}", port, context, window, stop) for i in range(nodes)]
    try:
        for t in threads:
            t.start()
        time.sleep(warmup)
        cpu0, t0 = cpu_seconds(ctl.pid), time.monotonic()
        window[0], window[1] = t0, t0 + seconds
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(ctl.pid), time.monotonic()
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        stop_groups([ctl])
    samples = [s for t in threads for s in t.samples]
    joins = [t.join_ms for t in threads if t.join_ms is not None]
    return {
        "mode": mode,
        "heartbeats": len(samples),
        "per_second": len(samples) / (t1 - t0),
        "errors": sum(t.errors for t in threads),
        "p50_ms": pct(samples, 50), "p95_ms": pct(samples, 95), "p99_ms": pct(samples, 99),
        "max_ms": max(samples),
        "join_p50_ms": pct(joins, 50),
        "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    binary = release_binary()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-heartbeat-") as d:
        make_pki(d)
        for r in range(a.rounds):
            for mode in ("plain", "tls"):
                run_dir = os.path.join(d, f"{mode}-{r}")
                os.makedirs(run_dir)
                for f in ("ca.pem", "server.pem", "server.key"):
                    os.link(os.path.join(d, f), os.path.join(run_dir, f))
                res = measure(binary, run_dir, mode, a.nodes, a.seconds, a.warmup)
                res["round"] = r + 1
                results.append(res)
                print(f"round {r + 1} {mode}: {res['per_second']:.0f}/s p50 {res['p50_ms']:.2f} ms "
                      f"p99 {res['p99_ms']:.2f} ms, controller CPU {res['cpu_percent']:.1f}%, "
                      f"{res['errors']} errors", file=sys.stderr)
    print(f"\n{a.nodes} nodes, one heartbeat a second each, {a.seconds:.0f} s measured per run "
          f"(load before: {' '.join(open('/proc/loadavg').read().split()[:3])}; source {git_state()})\n")
    print("| round | mode | heartbeats/s | p50 | p95 | p99 | max | join p50 | controller CPU | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for x in results:
        print(f"| {x['round']} | {x['mode']} | {x['per_second']:.1f} | {x['p50_ms']:.2f} ms | "
              f"{x['p95_ms']:.2f} ms | {x['p99_ms']:.2f} ms | {x['max_ms']:.1f} ms | "
              f"{x['join_p50_ms']:.1f} ms | {x['cpu_percent']:.2f}% | {x['errors']} |")
    for r in range(1, a.rounds + 1):
        p = next(x for x in results if x["round"] == r and x["mode"] == "plain")
        t = next(x for x in results if x["round"] == r and x["mode"] == "tls")
        print(f"\nround {r}: TLS/plain p50 {t['p50_ms'] / p['p50_ms']:.2f}x, "
              f"p99 {t['p99_ms'] / p['p99_ms']:.2f}x, CPU {t['cpu_percent'] / max(p['cpu_percent'], 1e-9):.2f}x")
    out = os.path.join(ROOT, "bench", "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "heartbeat.json"), "w") as f:
        json.dump({"nodes": a.nodes, "seconds": a.seconds, "results": results}, f, indent=2)
    if any(x["errors"] for x in results):
        sys.exit("some heartbeats failed; see the counts above")


if __name__ == "__main__":
    main()
