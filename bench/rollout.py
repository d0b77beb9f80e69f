#!/usr/bin/env python3
"""The same rolling update done by docker-compose `up -d` and by reconcile,
under the same load, counted side by side: failed requests and longest gap.

Backends, both sides: 4 busybox:stable containers running
`httpd -f -p 8080` that answer `/` with their VERSION environment value
(bridge network, 32 MiB, stop timeout 2 s). The update changes VERSION, so
every container is replaced.

  (a) compose: a project of 4 services web1..web4 (compose 1.29 cannot scale
      one service with distinct published ports) published on
      127.0.0.1:18081-18084, and in front Debian's host HAProxy
      (/usr/sbin/haproxy, generated config: roundrobin, `option httpchk GET /`
      every 1 s, rise 2 fall 2, `retries 3`, `option redispatch`, connect
      timeout 1 s) on 127.0.0.1:18090: how a compose user gets one address
      for 4 replicas. Update = rewrite the compose file with the new VERSION
      and run `compose up -d` (compose recreates the 4 containers). Done =
      `up -d` returned and HAProxy reports the 4 servers UP again.
  (b) reconcile: `reconcile controller --plain-http --source DIR` and one
      `reconcile agent` on this host (--address 127.0.0.1, --no-dns), a
      service of 4 tasks with a loadBalancers listener on 127.0.0.1:18080
      (HTTP, health check every 2 s, timeout 1 s, 2 to be healthy;
      deregistrationDelay left at its default), minimumHealthyPercent 100,
      maximumPercent 200. Update = rewrite the manifest with the new VERSION
      and `reconcile sync --controller URL`. Done = the service's newest
      deployment is of the new revision and COMPLETED
      (GET /v1/status, as `reconcile status --format json` shows it).

Load, the same for both: wrk -t2 -c16 (keep-alive) against the one address
for the whole window, stopped with SIGINT; failed = "Non-2xx or 3xx" +
socket errors. Beside it a gap probe: 2 threads on keep-alive connections
and 2 opening a connection per request (http.client, one GET every 20 ms
each) record when each successful answer completed; longest gap = the
longest time between two consecutive successes of all 4 threads together.
Window: load starts, 2 s, update, wait until done, 2 s, stop.

Each system is set up once, brought to steady state (all 4 containers
healthy in its balancer) before each run, and updated --runs times (v1 ->
v2 -> v3 ...). Everything created carries the label reconcile-bench=rollout
and is removed at the end (also on error, Ctrl-C or SIGTERM): containers by
label, the compose project with `down`, HAProxy, the controller and the
agent by process group, the controller's temp data dir. Nothing is pulled.

Usage: bench/rollout.py [--runs 3] [--systems compose,reconcile]
Prints Markdown tables; raw numbers and machine facts in
bench/out/rollout.json, logs (controller, agent, HAProxy, compose, wrk) in
bench/out/rollout-logs/.
"""
import argparse
import csv
import http.client
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apply  # noqa: E402
from apply import (IMAGE, api_version, compose_command, filters,  # noqa: E402
                   machine_facts, remove_labelled, remove_networks)

ROOT = apply.ROOT
OUT = os.path.join(ROOT, "bench", "out")
LOGS = os.path.join(OUT, "rollout-logs")
LABEL_KEY, LABEL_VALUE = "reconcile-bench", "rollout"
TASKS = 4
LISTENER_PORT = 18080       # reconcile's listener
HAPROXY_PORT = 18090        # HAProxy in front of compose
COMPOSE_PORTS = [18081 + i for i in range(TASKS)]
MEMORY_MIB = 32
STOP_TIMEOUT = 2
HTTPD = 'mkdir -p /www && echo "$VERSION" > /www/index.html && exec httpd -f -p 8080 -h /www'
JOIN_TOKEN = "bench-join-token-" + os.urandom(8).hex()
API_TOKEN = "bench-api-token-" + os.urandom(8).hex()
SETTLE_BEFORE = 2.0
SETTLE_AFTER = 2.0
PROBE_PERIOD = 0.02


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def spawn(cmd, logpath, env=None):
    """A long-running child in a session of its own (so every exit path can
    stop its process group), registered with bench/apply.py's children."""
    f = open(logpath, "ab")
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                         start_new_session=True)
    f.close()
    with apply.CHILDREN_LOCK:
        apply.CHILDREN.add(p)
    return p


def stop(p, grace=10):
    apply.stop_groups([p], grace)
    with apply.CHILDREN_LOCK:
        apply.CHILDREN.discard(p)


def wait_for(what, timeout, ok, interval=0.25):
    t = time.monotonic()
    while True:
        r = ok()
        if r:
            return r
        if time.monotonic() - t > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def http_get(port, timeout=2):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/")
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace").strip()
    finally:
        c.close()


# --- load: wrk and the gap probe --------------------------------------------

class Wrk:
    def __init__(self, port, out):
        self.out = out
        self.f = open(out, "w")
        self.p = subprocess.Popen(["wrk", "-t2", "-c16", "-d600s", "--timeout", "10s",
                                   f"http://127.0.0.1:{port}/"],
                                  stdout=self.f, stderr=subprocess.STDOUT, start_new_session=True)
        with apply.CHILDREN_LOCK:
            apply.CHILDREN.add(self.p)

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        with apply.CHILDREN_LOCK:
            apply.CHILDREN.discard(self.p)
        self.f.close()
        text = open(self.out).read()
        requests = None
        non2xx = socket_errors = 0
        for line in text.splitlines():
            s = line.strip()
            if "requests in" in s:
                requests = int(s.split()[0])
            elif s.startswith("Non-2xx or 3xx responses:"):
                non2xx += int(s.split(":")[1])
            elif s.startswith("Socket errors:"):
                # Socket errors: connect 0, read 3, write 0, timeout 0
                socket_errors += sum(int(part.split()[-1]) for part in s.split(":", 1)[1].split(","))
        if requests is None:
            raise RuntimeError(f"no request count in wrk's output:\n{text}")
        return {"requests": requests, "failed": non2xx + socket_errors, "non2xx": non2xx,
                "socket_errors": socket_errors, "summary": text}


class Probe:
    """Threads that GET / in a loop and record when each success completed."""

    def __init__(self, port, keepalive=2, fresh=2):
        self.port = port
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok_times = []
        self.failures = 0
        self.versions = {}
        self.threads = [threading.Thread(target=self._run, args=(True,), daemon=True) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self._run, args=(False,), daemon=True) for _ in range(fresh)]

    def start(self):
        for t in self.threads:
            t.start()

    def _run(self, keepalive):
        conn = None
        while not self.stop_ev.is_set():
            ok = False
            body = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read().decode(errors="replace").strip()
                ok = r.status == 200
                if not keepalive or r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            now = time.monotonic()
            with self.lock:
                if ok:
                    self.ok_times.append(now)
                    self.versions[body] = self.versions.get(body, 0) + 1
                else:
                    self.failures += 1
            self.stop_ev.wait(PROBE_PERIOD)
        if conn is not None:
            conn.close()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)
        ts = sorted(self.ok_times)
        gap = max((b - a for a, b in zip(ts, ts[1:])), default=None)
        where = None
        if gap is not None:
            i = max(range(len(ts) - 1), key=lambda i: ts[i + 1] - ts[i])
            where = ts[i]
        return {"ok": len(ts), "failed": self.failures, "longest_gap_s": gap,
                "gap_at": where, "versions": self.versions}


def measured_update(port, update, done, timeout):
    """Load on `port`; after 2 s `update()`; wait for `done()`; 2 s; stop.
    Returns the counts and the update's duration (update call to done)."""
    tag = time.strftime("%H%M%S")
    wrk = Wrk(port, os.path.join(LOGS, f"wrk-{port}-{tag}.txt"))
    probe = Probe(port)
    probe.start()
    try:
        time.sleep(SETTLE_BEFORE)
        t0 = time.monotonic()
        extra = update() or {}
        wait_for("the update to finish", timeout, done, interval=0.1)
        duration = time.monotonic() - t0
        time.sleep(SETTLE_AFTER)
    finally:
        p = probe.stop()
        w = wrk.stop()
    if p["gap_at"] is not None:
        p["gap_at_s_after_update"] = round(p["gap_at"] - t0, 3)
    p.pop("gap_at")
    return {"wrk_requests": w["requests"], "wrk_failed": w["failed"], "wrk_non2xx": w["non2xx"],
            "wrk_socket_errors": w["socket_errors"], "probe": p,
            "longest_gap_s": p["longest_gap_s"], "update_s": duration, **extra,
            "wrk_summary": w["summary"]}


# --- (a) compose + HAProxy --------------------------------------------------

class ComposeSide:
    name = "docker-compose up -d + HAProxy"

    def __init__(self, compose, tmp, version):
        self.compose = compose
        self.dir = os.path.join(tmp, "compose")
        os.makedirs(self.dir)
        self.project = f"rolloutbench{os.getpid()}"
        self.file = os.path.join(self.dir, "docker-compose.yml")
        self.api_version = version
        self.haproxy = None
        self.sock = os.path.join(self.dir, "haproxy.sock")
        self.port = HAPROXY_PORT
        self.ups = 0

    def write(self, ver):
        services = {}
        for i, port in enumerate(COMPOSE_PORTS, 1):
            services[f"web{i}"] = {
                "image": IMAGE,
                # $$: compose would otherwise substitute $VERSION itself.
                "command": ["sh", "-c", HTTPD.replace("$", "$$")],
                "environment": {"VERSION": ver},
                "ports": [f"127.0.0.1:{port}:8080"],
                "mem_limit": f"{MEMORY_MIB}m",
                "stop_grace_period": f"{STOP_TIMEOUT}s",
                "labels": {LABEL_KEY: LABEL_VALUE},
            }
        doc = {"version": "2.4", "services": services}
        with open(self.file, "w") as f:
            json.dump(doc, f, indent=2)  # JSON is YAML

    def up(self):
        self.ups += 1
        cmd = self.compose + ["-p", self.project, "-f", self.file, "up", "-d"]
        t = time.monotonic()
        # Registered, so that an interrupted bench stops it before removing
        # the containers it may still be creating.
        p = spawn(cmd, os.path.join(LOGS, f"compose-up-{self.ups}.log"))
        code = p.wait()
        with apply.CHILDREN_LOCK:
            apply.CHILDREN.discard(p)
        if code != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {code} (see bench/out/rollout-logs/)")
        return time.monotonic() - t

    def start(self, ver):
        for p in COMPOSE_PORTS + [self.port]:
            if not port_free(p):
                raise RuntimeError(f"port {p} is taken")
        self.write(ver)
        self.up()
        servers = "\n".join(f"    server web{i} 127.0.0.1:{p} check"
                            for i, p in enumerate(COMPOSE_PORTS, 1))
        cfg = f"""global
    maxconn 4096
    stats socket {self.sock} mode 600 level admin
defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
listen web
    bind 127.0.0.1:{self.port}
    balance roundrobin
    option httpchk GET /
    default-server inter 1s rise 2 fall 2
{servers}
"""
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        shutil.copy(path, os.path.join(LOGS, "haproxy.cfg"))
        self.haproxy = spawn(["/usr/sbin/haproxy", "-db", "-f", path], os.path.join(LOGS, "haproxy.log"))
        self.ready(ver, 60)

    def server_states(self):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            s.connect(self.sock)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
        except OSError:
            return {}
        text = data.decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r["status"] for r in rows if r["svname"].startswith("web")}

    def all_up(self):
        st = self.server_states()
        return len(st) == TASKS and all(v == "UP" for v in st.values())

    def ready(self, ver, timeout):
        def ok():
            return self.all_up() and all(http_get(p)[1] == ver for p in COMPOSE_PORTS)
        wait_for(f"4 compose backends UP in HAProxy answering {ver}", timeout, ok)

    def update(self, ver):
        self.write(ver)
        state = {}

        def go():
            try:
                state["up_s"] = self.up()
            except Exception as e:  # reported by done(), in the main thread
                state["error"] = e
            return {}

        def done():
            if "error" in state:
                raise state["error"]
            return "up_s" in state and self.all_up()

        # `up -d` blocks; run it in a thread so done() is polled the same way.
        th = threading.Thread(target=lambda: state.update(up=go()), daemon=True)
        r = measured_update(self.port, lambda: th.start(), done, 300)
        th.join()
        r["compose_up_returned_s"] = state.get("up_s")
        return r

    def close(self):
        if self.haproxy:
            stop(self.haproxy)
        subprocess.run(self.compose + ["-p", self.project, "-f", self.file, "down", "-t", "0"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        remove_networks(self.api_version, filters(**{"com.docker.compose.project": self.project}))


# --- (b) reconcile controller + one agent ------------------------------------

class ReconcileSide:
    name = "reconcile (controller + 1 agent, listener)"

    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp
        self.src = os.path.join(tmp, "source")
        os.makedirs(self.src)
        self.data = os.path.join(tmp, "controller-data")
        self.cluster = f"rollout{os.getpid()}"
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.port = LISTENER_PORT
        self.controller = None
        self.agent = None
        self.revision = 0
        self.env = dict(os.environ, RECONCILE_JOIN_TOKEN=JOIN_TOKEN, RECONCILE_API_TOKEN=API_TOKEN)

    def write(self, ver):
        command = "\n".join(f"        - {json.dumps(x)}" for x in ["sh", "-c", HTTPD])
        text = f"""apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {{name: {self.cluster}}}
spec: {{}}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      memory: {MEMORY_MIB}
      stopTimeout: {STOP_TIMEOUT}
      command:
{command}
      portMappings: [{{containerPort: 8080}}]
      environment: [{{name: VERSION, value: "{ver}"}}]
      dockerLabels: {{{LABEL_KEY}: {LABEL_VALUE}}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: web}}
spec:
  cluster: {self.cluster}
  taskDefinition: web
  desiredCount: {TASKS}
  deploymentConfiguration: {{minimumHealthyPercent: 100, maximumPercent: 200}}
  loadBalancers:
    - containerName: web
      containerPort: 8080
      listenerPort: {self.port}
      healthCheck: {{interval: 2, timeout: 1, healthyThresholdCount: 2, unhealthyThresholdCount: 2}}
"""
        tmp = os.path.join(self.src, ".web.yaml.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.src, "web.yaml"))
        shutil.copy(os.path.join(self.src, "web.yaml"), os.path.join(LOGS, "reconcile-web.yaml"))

    def status(self):
        req = urllib.request.Request(self.url + "/v1/status",
                                     headers={"Authorization": f"Bearer {API_TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def web(self):
        try:
            s = self.status()
        except OSError:
            return None
        for v in s.get("services", []):
            if v.get("name") == "web" or str(v.get("service", "")).endswith("web"):
                return v
        return None

    def serving(self, revision):
        """Newest deployment of `revision` COMPLETED, 4 RUNNING tasks of it
        and nothing else, 4 HEALTHY targets."""
        w = self.web()
        if not w:
            return False
        deps = w.get("deployments") or []
        if not deps or deps[0].get("revision") != revision or deps[0].get("rolloutState") != "COMPLETED":
            return False
        live = [t for t in w.get("tasks", []) if t.get("lastStatus") != "STOPPED"]
        targets = ((w.get("listeners") or [{}])[0]).get("targets") or []
        return (len(live) == TASKS and all(t.get("revision") == revision and t.get("lastStatus") == "RUNNING"
                                           for t in live)
                and len(targets) == TASKS and all(t.get("state") == "HEALTHY" for t in targets))

    def completed(self, revision):
        w = self.web()
        deps = (w or {}).get("deployments") or []
        return bool(deps) and deps[0].get("revision") == revision and deps[0].get("rolloutState") == "COMPLETED"

    def start(self, ver):
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} is taken")
        self.write(ver)
        self.controller = spawn(
            [self.binary, "controller", "--source", self.src, "--data-dir", self.data,
             "--listen", f"127.0.0.1:{self.api_port}", "--plain-http",
             "--interval", "600", "--heartbeat-ms", "500", "--node-timeout", "10"],
            os.path.join(LOGS, "controller.log"), env=self.env)
        wait_for("the controller to listen", 30, lambda: self._connects(self.api_port))
        self.agent = spawn(
            [self.binary, "agent", "--plain-http", "--controller", self.url, "--cluster", self.cluster,
             "--name", "bench", "--address", "127.0.0.1", "--listen-address", "127.0.0.1", "--no-dns",
             "--token", JOIN_TOKEN, "--credential-file", os.path.join(self.tmp, "agent-credential.json")],
            os.path.join(LOGS, "agent.log"), env=self.env)
        self.revision = 1
        self.sync()
        wait_for("4 healthy targets of revision 1", 120, lambda: self.serving(1))
        wait_for(f"the listener answering {ver}", 30, lambda: self._answers(ver))

    def _connects(self, port):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True
        except OSError:
            return False

    def _answers(self, ver):
        try:
            return http_get(self.port)[1] == ver
        except OSError:
            return False

    def sync(self):
        r = subprocess.run([self.binary, "sync", "--controller", self.url], env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"reconcile sync: {r.stdout.decode(errors='replace')}")

    def ready(self, ver, timeout):
        wait_for(f"4 healthy targets of revision {self.revision}", timeout, lambda: self.serving(self.revision))

    def update(self, ver):
        self.revision += 1
        rev = self.revision

        def go():
            self.write(ver)
            self.sync()

        return measured_update(self.port, go, lambda: self.completed(rev), 300)

    def close(self):
        for p in (self.agent, self.controller):
            if p:
                stop(p)


# --- main ---------------------------------------------------------------------

def ms(x):
    return "n/a" if x is None else f"{x * 1e3:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--systems", default="compose,reconcile")
    a = ap.parse_args()
    systems = a.systems.split(",")
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing (scripts/docker-setup.sh installs it)")
    if "compose" in systems and not os.access("/usr/sbin/haproxy", os.X_OK):
        sys.exit("/usr/sbin/haproxy is missing (Debian: apt-get install -y haproxy)")
    compose, compose_version = compose_command()
    binary = apply.release_binary() if "reconcile" in systems else None
    if subprocess.run(["docker", "image", "inspect", IMAGE], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"image {IMAGE} is missing (scripts/docker-setup.sh builds it); this bench never pulls")
    version = api_version()
    facts = machine_facts(f"{' '.join(compose)}: {compose_version}")
    facts["haproxy"] = subprocess.run(["/usr/sbin/haproxy", "-v"], stdout=subprocess.PIPE).stdout.decode().splitlines()[0]
    facts["wrk"] = "wrk -t2 -c16 --timeout 10s"
    facts["command"] = " ".join(["bench/rollout.py"] + sys.argv[1:])
    print(json.dumps(facts, indent=2))
    # The previous run's logs are kept once, as rollout-logs.prev.
    if os.path.isdir(LOGS):
        shutil.rmtree(LOGS + ".prev", ignore_errors=True)
        os.rename(LOGS, LOGS + ".prev")
    os.makedirs(LOGS)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    tmp = tempfile.mkdtemp(prefix="reconcile-bench-rollout-")
    label = filters(**{LABEL_KEY: LABEL_VALUE})
    result = {"facts": facts, "systems": {}}
    try:
        for system in systems:
            side = ComposeSide(compose, tmp, version) if system == "compose" else ReconcileSide(binary, tmp)
            runs = []
            result["systems"][side.name] = runs
            try:
                log(f"{side.name}: setting up 4 backends (v1)")
                side.start("v1")
                for i in range(a.runs):
                    old, new = f"v{i + 1}", f"v{i + 2}"
                    side.ready(old, 120)
                    time.sleep(1)
                    log(f"{side.name}: run {i + 1}: {old} -> {new} under load")
                    r = side.update(new)
                    runs.append(r)
                    log(f"  failed {r['wrk_failed']} of {r['wrk_requests']} (wrk), probe failed "
                        f"{r['probe']['failed']} of {r['probe']['ok'] + r['probe']['failed']}, "
                        f"longest gap {ms(r['longest_gap_s'])} ms, update {r['update_s']:.1f} s, "
                        f"probe saw {r['probe']['versions']}")
            finally:
                apply.stop_children()  # wrk, a running `up -d`, HAProxy, the controller, the agent
                side.close()
                remove_labelled(version, label)
    finally:
        apply.stop_children()
        remove_labelled(version, label)
        shutil.rmtree(tmp, ignore_errors=True)
        facts["load_after"] = open("/proc/loadavg").read().split()[:3]

    with open(os.path.join(OUT, "rollout.json"), "w") as f:
        json.dump(result, f, indent=2)

    print(f"\nRolling update of 4 busybox httpd backends under wrk -t2 -c16 ({a.runs} runs each)\n")
    print("| system | run | failed requests (wrk) | of which non-2xx / socket errors | total requests (wrk) "
          "| probe failed / total | longest gap (ms) | update duration (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in result["systems"].items():
        for i, r in enumerate(runs, 1):
            p = r["probe"]
            print(f"| {name} | {i} | {r['wrk_failed']} | {r['wrk_non2xx']} / {r['wrk_socket_errors']} | "
                  f"{r['wrk_requests']} | {p['failed']} / "
                  f"{p['ok'] + p['failed']} | {ms(r['longest_gap_s'])} | {r['update_s']:.1f} |")
        if runs:
            med = statistics.median
            print(f"| {name} | **median** | {med(r['wrk_failed'] for r in runs):g} | | "
                  f"{med(r['wrk_requests'] for r in runs):g} | {med(r['probe']['failed'] for r in runs):g} / "
                  f"{med(r['probe']['ok'] + r['probe']['failed'] for r in runs):g} | "
                  f"{ms(med(r['longest_gap_s'] for r in runs))} | {med(r['update_s'] for r in runs):.1f} |")
    comp = result["systems"].get(ComposeSide.name) or []
    if comp:
        print("\ncompose `up -d` returned after (s): "
              + ", ".join(f"{r['compose_up_returned_s']:.1f}" for r in comp)
              + "; the update duration above runs until HAProxy has the 4 servers UP again")


if __name__ == "__main__":
    main()
