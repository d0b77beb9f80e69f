#!/usr/bin/env python3
"""What sampling task usage costs a node's agent.

One controller (--plain-http on loopback) and one agent on this host run a
service of 100 busybox tasks (`sleep`, networkMode none, 8 MiB each). The
agent process's CPU (utime + stime from /proc/PID/stat) is measured over the
same window three ways, in one run:

  (a) the agent sampling usage at its default interval (10 s);
  (b) the same agent restarted with `--stats-interval 0` (it adopts the same
      containers; nothing is sampled);
  (c) `docker stats` streaming the same 100 containers (the CLI's own CPU),
      with the agent of (b) still running.

dockerd's CPU over each window is reported beside it: sampling costs the
engine too. Before (a) is measured the controller's status must show the
usage of all 100 tasks, so the agent is known to sample them.

Needs the local Docker engine and `busybox:stable` (scripts/docker-setup.sh);
nothing is pulled. Python 3, standard library only; it builds the release
binary (`cargo build --release`, honouring CARGO_TARGET_DIR). Everything it
creates carries the label reconcile-bench=agent-stats and is removed by it
at the end, also after a failure or Ctrl-C. Results: a Markdown table on
stdout, raw numbers in bench/out/agent_stats.json.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apply  # noqa: E402
from apply import IMAGE, api_version, filters, machine_facts, remove_labelled  # noqa: E402
# Children in sessions of their own, stopped on every exit path.
from rollout import free_port, spawn, stop, wait_for  # noqa: E402

ROOT = apply.ROOT
OUT = os.path.join(ROOT, "bench", "out")
LOGS = os.path.join(OUT, "agent-stats-logs")
LABEL_KEY, LABEL_VALUE = "reconcile-bench", "agent-stats"
JOIN_TOKEN = "bench-join-token-" + os.urandom(8).hex()
API_TOKEN = "bench-api-token-" + os.urandom(8).hex()
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields after the command: state is [0]; utime and stime are 14 and 15
    # of the whole line, so [11] and [12] here.
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(pids, seconds):
    """Percent of one core each of `pids` used over `seconds`."""
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    t = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t
    return {k: round((cpu_seconds(p) - before[k]) / wall * 100, 2) for k, p in pids.items()}


def dockerd_pid():
    r = subprocess.run(["pidof", "dockerd"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    pids = r.stdout.decode().split()
    return int(pids[0]) if pids else None


class Fleet:
    def __init__(self, binary, tmp, tasks):
        self.binary = binary
        self.tmp = tmp
        self.tasks = tasks
        self.src = os.path.join(tmp, "source")
        os.makedirs(self.src)
        self.data = os.path.join(tmp, "controller-data")
        self.cluster = f"stats{os.getpid()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, RECONCILE_JOIN_TOKEN=JOIN_TOKEN, RECONCILE_API_TOKEN=API_TOKEN)
        self.controller = None
        self.agent = None

    def write(self):
        text = f"""apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {{name: {self.cluster}}}
spec: {{}}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: idle}}
spec:
  networkMode: none
  containerDefinitions:
    - name: idle
      image: {IMAGE}
      command: [sleep, "3600"]
      cpu: 8
      memory: 8
      stopTimeout: 1
      dockerLabels: {{{LABEL_KEY}: {LABEL_VALUE}}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: idle}}
spec:
  cluster: {self.cluster}
  taskDefinition: idle
  desiredCount: {self.tasks}
  deploymentConfiguration: {{minimumHealthyPercent: 0, maximumPercent: 100}}
"""
        with open(os.path.join(self.src, "idle.yaml"), "w") as f:
            f.write(text)

    def status(self):
        req = urllib.request.Request(self.url + "/v1/status",
                                     headers={"Authorization": f"Bearer {API_TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def nodes(self):
        try:
            return self.status().get("nodes")
        except OSError:
            return None

    def tasks_running(self):
        try:
            s = self.status()
        except OSError:
            return []
        return [t for v in s.get("services", []) for t in v.get("tasks", [])
                if t.get("lastStatus") == "RUNNING"]

    def start_controller(self):
        self.write()
        self.controller = spawn(
            [self.binary, "controller", "--source", self.src, "--data-dir", self.data,
             "--listen", f"127.0.0.1:{self.port}", "--plain-http", "--interval", "5",
             "--heartbeat-ms", "1000", "--node-timeout", "30"],
            os.path.join(LOGS, "controller.log"), env=self.env)
        wait_for("the controller to listen", 30, self._listens)

    def _listens(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def start_agent(self, extra, tag):
        self.agent = spawn(
            [self.binary, "agent", "--plain-http", "--controller", self.url, "--cluster", self.cluster,
             "--name", "bench", "--address", "127.0.0.1", "--listen-address", "127.0.0.1", "--no-dns",
             "--cpu", str(max(1024, self.tasks * 8)), "--memory", str(max(1024, self.tasks * 8)),
             "--allow-overcommit",
             "--credential-file", os.path.join(self.tmp, "agent-credential.json"), *extra],
            os.path.join(LOGS, f"agent-{tag}.log"), env=self.env)

    def sync(self):
        r = subprocess.run([self.binary, "sync", "--controller", self.url], env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"reconcile sync: {r.stdout.decode(errors='replace')}")

    def close(self):
        for p in (self.agent, self.controller):
            if p:
                stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=60, help="length of each measured window")
    ap.add_argument("--settle", type=int, default=15, help="seconds waited before each window")
    ap.add_argument("--binary", help="a reconcile binary to use instead of building the release one")
    a = ap.parse_args()
    os.makedirs(LOGS, exist_ok=True)
    binary = a.binary or apply.release_binary()
    version = api_version()
    label = filters(**{LABEL_KEY: LABEL_VALUE})
    facts = machine_facts("n/a")
    tmp = tempfile.mkdtemp(prefix="reconcile-bench-stats-")
    fleet = Fleet(binary, tmp, a.tasks)
    streaming = None
    results = {}
    try:
        fleet.start_controller()
        fleet.start_agent([], "default")
        wait_for("the node to join", 60, lambda: fleet.nodes())
        fleet.sync()
        log(f"waiting for {a.tasks} running tasks")
        wait_for(f"{a.tasks} running tasks", 600, lambda: len(fleet.tasks_running()) == a.tasks, 2)
        # Two rounds of samples (default interval 10 s) and a heartbeat.
        wait_for("the usage of every task", 60,
                 lambda: sum(1 for t in fleet.tasks_running() if "cpuUtilization" in t) == a.tasks, 2)
        dockerd = dockerd_pid()
        time.sleep(a.settle)

        def window(name, pids):
            log(f"measuring {name} for {a.seconds} s")
            r = measure({k: v for k, v in pids.items() if v}, a.seconds)
            results[name] = r
            log(f"  {r}")

        window("agent, stats every 10 s", {"process": fleet.agent.pid, "dockerd": dockerd})

        stop(fleet.agent)
        fleet.start_agent(["--stats-interval", "0"], "off")
        wait_for("the agent without stats to report", 60,
                 lambda: len(fleet.tasks_running()) == a.tasks
                 and not any("cpuUtilization" in t for t in fleet.tasks_running()), 2)
        time.sleep(a.settle)
        window("agent, --stats-interval 0", {"process": fleet.agent.pid, "dockerd": dockerd})

        ids = [c["Id"] for c in apply.containers(version, label)]
        if len(ids) != a.tasks:
            raise RuntimeError(f"{len(ids)} containers labelled, {a.tasks} expected")
        streaming = spawn(["docker", "stats", *ids], os.devnull)
        time.sleep(a.settle)
        window(f"docker stats (CLI streaming {a.tasks} containers)",
               {"process": streaming.pid, "dockerd": dockerd})
    finally:
        if streaming:
            stop(streaming)
        fleet.close()
        apply.stop_children()
        remove_labelled(version, label)
        shutil.rmtree(tmp, ignore_errors=True)
    facts["load_after"] = open("/proc/loadavg").read().split()[:3]
    out = {"facts": facts, "tasks": a.tasks, "seconds": a.seconds, "results": results}
    with open(os.path.join(OUT, "agent_stats.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(f"\n{a.tasks} running tasks, {a.seconds} s per window; CPU in % of one core\n")
    print("| what | its CPU | dockerd CPU |")
    print("|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r.get('process', 'n/a')} | {r.get('dockerd', 'n/a')} |")
    print(f"\nmachine: {facts['nproc']} x {facts['cpu']}, load before {facts['load_before']}, "
          f"after {facts['load_after']}, Docker {facts['docker_server']}, cgroup {facts['cgroup']}")


if __name__ == "__main__":
    main()
