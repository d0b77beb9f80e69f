#!/usr/bin/env python3
"""Commit-to-converged latency of GitOps, side by side in one run, for N
one-container services (busybox:stable running a shell that exits at once on
SIGTERM, 16 MiB memory limit, stop timeout 2 s, network none):

  (a) `reconcile controller --source git+file://REMOTE` with one agent on the
      local Docker engine; each push is followed by the signed webhook
      (`POST /v1/webhook`, `X-Hub-Signature-256`) as a git host sends it.
      Services replace their task stop-first (minimumHealthyPercent 0,
      maximumPercent 100), as compose does.
  (b) the scripted peer: a clone where a shell loop runs
      `git pull && docker-compose up -d` back to back, no sleep (the best
      case for a polling loop), over a compose file with the same services.

Each tool first brings up the N services (timed for reference, outside the
samples). Then K times one service's environment value is changed in an
authoring clone, committed and pushed; a sample is the time from the moment
`git push` returned until that service has exactly one running container
and it carries the new value (Engine API polled every 50 ms). Also recorded:
when the old container was gone, the new container's State.StartedAt, and
for reconcile the controller's and agent's log lines (timestamped here, to
the millisecond) of the fetch, the plan, the stop and the start.

Everything created is labelled bench.reconcile=1 (plus the cluster, or the
compose project, unique to this run) and removed by label at the end, also
on failure, Ctrl-C or SIGTERM, after the controller, the agent and the loop
(process groups) are stopped. The image must exist locally: nothing is ever
pulled.

Usage: bench/gitops_latency.py [--services 100,1000] [--runs 5]
                               [--tools reconcile,compose] [--timeout 600]
                               [--keep-going]
Prints a Markdown table and writes bench/out/gitops_latency.json; the logs
(controller, agent, compose loop) go to bench/out/gitops_latency-logs/.
"""
import argparse
import collections
import hashlib
import hmac
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# The Engine API client, the child-process registry, label-based removal and
# the machine facts are those of bench/apply.py: one implementation.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apply  # noqa: E402
from apply import (IMAGE, LABEL, Api, api_version, compose_command, filters,  # noqa: E402
                   machine_facts, parse_ts, remove_labelled, remove_networks)

ROOT = apply.ROOT
OUT = os.path.join(ROOT, "bench", "out")
LOGS = os.path.join(OUT, "gitops_latency-logs")
MEMORY_MIB = 16
STOP_TIMEOUT = 2
# PID 1 ignores SIGTERM without a handler: the trap makes a stop immediate
# for both tools, so stop_timeout never pads a sample.
COMMAND = ["sh", "-c", 'trap "exit 0" TERM; sleep 3600 & wait']
ENV_KEY = "BENCH_VERSION"
POLL = 0.05
JOIN_TOKEN = "bench-join-token-" + os.urandom(8).hex()
API_TOKEN = "bench-api-token-" + os.urandom(8).hex()
HOOK_SECRET = "bench-webhook-secret-" + os.urandom(8).hex()
GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid",
               GIT_TERMINAL_PROMPT="0")


# --- helpers ---------------------------------------------------------------

def git(cwd, *args):
    # No signing, whatever the user's global config says: a prompt for a key
    # would hang the bench and a signature would slow every commit.
    r = subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=cwd, env=GIT_ENV,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd}: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode().strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def release_binary():
    # Its own target dir by default, so that a build here neither waits for
    # nor invalidates the one of a test suite running in ./target.
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", "/tmp/target-bench")
    r = subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, env=env)
    if r.returncode != 0:
        sys.exit("cargo build --release failed")
    path = os.path.join(env["CARGO_TARGET_DIR"], "release", "reconcile")
    if not os.access(path, os.X_OK):
        sys.exit(f"no release binary at {path}")
    return path


class LogCapture:
    """A child's output, each line prefixed with the wall-clock time it was
    read (the controller logs whole seconds only), kept for the breakdown."""

    def __init__(self, path):
        self.file = open(path, "w")
        self.lines = collections.deque(maxlen=500_000)
        self.lock = threading.Lock()

    def attach(self, pipe, tag=""):
        threading.Thread(target=self._pump, args=(pipe, tag), daemon=True).start()

    def _pump(self, pipe, tag):
        for raw in iter(pipe.readline, b""):
            t = time.time()
            line = tag + raw.decode(errors="replace").rstrip("\n")
            with self.lock:
                self.lines.append((t, line))
                self.file.write(f"{t:.3f} {line}\n")
                self.file.flush()

    def first(self, after, *needles):
        """Seconds from `after` to the first line since then holding all of
        `needles`, or None."""
        with self.lock:
            for t, line in self.lines:
                if t >= after and all(n in line for n in needles):
                    return round(t - after, 3)
        return None

    def times(self, after, before, needle):
        with self.lock:
            return [t for t, line in self.lines if after <= t <= before and needle in line]


def spawn(cmd, log, env=None, cwd=None, tag=""):
    """A long-running child in a session of its own, registered with
    bench/apply.py's children so every exit path stops its process group."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    with apply.CHILDREN_LOCK:
        apply.CHILDREN.add(p)
    log.attach(p.stdout, tag)
    return p


def stop(p, grace=10):
    apply.stop_groups([p], grace)
    with apply.CHILDREN_LOCK:
        apply.CHILDREN.discard(p)


def running(api, flt):
    return api.call("GET", f"/containers/json?filters={flt}")


def await_new(version, flt, old_ids, value, t0, wall0, timeout, what):
    """Poll until exactly one container matching `flt` runs, is not one of
    `old_ids` and has ENV_KEY=value. Returns seconds since t0 (perf counter)
    it was seen, when the old ones were gone, and its StartedAt - wall0."""
    api = Api(version)  # one keep-alive connection: a poll costs the daemon little
    gone = None
    try:
        while True:
            cs = running(api, flt)
            now = time.perf_counter()
            ids = [c["Id"] for c in cs]
            if gone is None and not old_ids.intersection(ids):
                gone = now - t0
            if len(ids) == 1 and ids[0] not in old_ids:
                info = api.call("GET", f"/containers/{ids[0]}/json")
                if info["State"]["Running"] and f"{ENV_KEY}={value}" in (info["Config"]["Env"] or []):
                    return {"converged_s": round(now - t0, 3), "old_gone_s": round(gone, 3),
                            "started_at_s": round(parse_ts(info["State"]["StartedAt"]) - wall0, 3),
                            "container": ids[0][:12], "labels": info["Config"]["Labels"]}
            if now - t0 > timeout:
                raise RuntimeError(f"{what}: not converged after {timeout} s "
                                   f"({len(ids)} running: {[i[:12] for i in ids]})")
            time.sleep(POLL)
    finally:
        api.close()


def await_count(version, flt, n, timeout, what, extra=lambda: True):
    """Wait until n containers matching flt run (and extra() holds)."""
    t = time.perf_counter()
    last_print = t
    api = Api(version)
    try:
        while True:
            k = len(running(api, flt))
            now = time.perf_counter()
            if k == n and extra():
                return now - t
            if now - t > timeout:
                raise RuntimeError(f"{what}: {k} of {n} running after {timeout} s")
            if now - last_print > 15:
                print(f"    {what}: {k}/{n} running after {now - t:.0f} s", flush=True)
                last_print = now
            time.sleep(0.5)
    finally:
        api.close()


def name(i):
    return f"svc-{i:04d}"


def changes(n, runs):
    """The service changed by each run: spread over the N, all distinct
    when runs <= n (each change then takes a service from revision 1 to 2)."""
    return [(k * n) // runs for k in range(runs)]


def summary(samples, key="converged_s"):
    v = [s[key] for s in samples if s.get(key) is not None]
    if not v:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(v), 3), "max": round(max(v), 3)}


# --- (a) reconcile controller + agent, following a git remote -------------

def task_manifest(i, cluster, version):
    return f"""apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: {name(i)}}}
spec:
  networkMode: none
  containerDefinitions:
    - name: main
      image: {IMAGE}
      command: {json.dumps(COMMAND)}
      memory: {MEMORY_MIB}
      stopTimeout: {STOP_TIMEOUT}
      environment:
        - {{name: {ENV_KEY}, value: "{version}"}}
      dockerLabels: {{{LABEL}: "1"}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: {name(i)}}}
spec:
  cluster: {cluster}
  taskDefinition: {name(i)}
  desiredCount: 1
  deploymentConfiguration:
    minimumHealthyPercent: 0
    maximumPercent: 100
"""


def new_repo(d):
    """A bare remote and an authoring clone of it, on branch main."""
    remote, work = os.path.join(d, "remote.git"), os.path.join(d, "work")
    os.makedirs(remote)
    git(remote, "init", "-q", "--bare", "-b", "main")
    git(d, "clone", "-q", remote, "work")
    git(work, "checkout", "-q", "-B", "main")
    return remote, work


def commit_push(work, message):
    """Commit everything and push; returns the commit (read before the
    push, so that nothing but the push precedes the clock start)."""
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    head = git(work, "rev-parse", "HEAD")
    git(work, "push", "-q", "origin", "main")
    return head


def webhook(port, secret):
    """POST /v1/webhook signed as GitHub signs it (HMAC-SHA256 of the body)."""
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("POST", "/v1/webhook", body=body, headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={sig}"})
        r = c.getresponse()
        r.read()
        if r.status != 202:
            raise RuntimeError(f"webhook: HTTP {r.status}")
    finally:
        c.close()


def controller_status(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/v1/status", headers={"Authorization": f"Bearer {API_TOKEN}"})
        r = c.getresponse()
        raw = r.read()
        return json.loads(raw) if r.status == 200 else {}
    except (OSError, http.client.HTTPException, ValueError):
        return {}  # not listening yet
    finally:
        c.close()


def bench_reconcile(b, n, runs):
    d = os.path.join(b.work, f"reconcile-{n}")
    os.makedirs(d)
    cluster = f"glat-{os.getpid()}-{n}"
    flt_all = filters(**{"reconcile.io/cluster": cluster})
    b.cleanups.append(("reconcile", flt_all))
    remote, work = new_repo(d)
    with open(os.path.join(work, "cluster.yaml"), "w") as f:
        f.write(f"apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {{name: {cluster}}}\nspec: {{}}\n")
    for i in range(n):
        with open(os.path.join(work, f"{name(i)}.yaml"), "w") as f:
            f.write(task_manifest(i, cluster, "v0"))
    head = commit_push(work, f"{n} services")

    port = free_port()
    env = dict(os.environ, RECONCILE_JOIN_TOKEN=JOIN_TOKEN, RECONCILE_API_TOKEN=API_TOKEN, NO_COLOR="1")
    env.pop("RECONCILE_WEBHOOK_SECRET", None)
    clog = LogCapture(os.path.join(LOGS, f"controller-{n}.log"))
    alog = LogCapture(os.path.join(LOGS, f"agent-{n}.log"))
    # --interval 600: only the webhook makes it fetch, as with a git host.
    controller = spawn([b.binary, "controller", "--source", f"git+file://{remote}",
                        "--interval", "600", "--webhook-secret", HOOK_SECRET, "--settle", "0",
                        "--heartbeat-ms", "250", "--node-timeout", "5",
                        "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(d, "data")],
                       clog, env=env)
    # Enough memory for the N tasks whatever the host has (16 MiB each).
    agent = spawn([b.binary, "agent", "--controller", f"http://127.0.0.1:{port}", "--cluster", cluster,
                   "--name", "node0", "--cpu", "4096", "--memory", str(max(4096, 2 * MEMORY_MIB * n))],
                  alog, env=env)
    try:
        applied = lambda commit: controller_status(port).get("appliedCommit") == commit  # noqa: E731
        up = await_count(b.version, flt_all, n, 120 + 2 * n, "reconcile bring-up", lambda: applied(head))
        print(f"  reconcile: {n} services up in {up:.1f} s (controller start to all running, commit applied)",
              flush=True)
        time.sleep(1)
        samples = []
        for k, i in enumerate(changes(n, runs), 1):
            svc, value = name(i), f"v{k}"
            flt = filters(**{"reconcile.io/cluster": cluster, "reconcile.io/service": svc})
            api = Api(b.version)
            old = {c["Id"] for c in running(api, flt)}
            api.close()
            with open(os.path.join(work, f"{svc}.yaml"), "w") as f:
                f.write(task_manifest(i, cluster, value))
            commit = commit_push(work, f"{svc}: {ENV_KEY}={value}")
            t0, wall0 = time.perf_counter(), time.time()
            webhook(port, HOOK_SECRET)
            hook = time.perf_counter() - t0
            s = await_new(b.version, flt, old, value, t0, wall0, b.a.timeout, f"reconcile {svc}")
            # Not part of the sample: when the controller called the commit
            # applied (the rollout recorded COMPLETED), before the next run.
            deadline = time.perf_counter() + b.a.timeout
            while not applied(commit):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"commit {commit[:12]} converged but never reported applied")
                time.sleep(0.2)  # /v1/status carries every task: poll it gently
            s["applied_s"] = round(time.perf_counter() - t0, 3)
            s.update(service=svc, commit=commit[:12], webhook_s=round(hook, 3),
                     revision=s.pop("labels").get("reconcile.io/revision"))
            short = commit[:12]
            s["log"] = {
                "fetched": clog.first(wall0, f"fetched commit {short}"),
                "plan_logged": clog.first(wall0, f"applying commit {short}"),
                "agent_stop": alog.first(wall0, "stopping task"),
                "agent_start": alog.first(wall0, "starting task", f"({svc}:"),
                "applied_event": clog.first(wall0, f"commit {short}: applied"),
            }
            samples.append(s)
            print(f"  reconcile run {k}: {svc} -> {value} (revision {s['revision']}) converged "
                  f"{s['converged_s']:.3f} s, old gone {s['old_gone_s']:.3f} s, new started "
                  f"{s['started_at_s']:.3f} s; log: {json.dumps(s['log'])}", flush=True)
            time.sleep(1)  # let the agent's next heartbeats settle
        return {"services": n, "bring_up_s": round(up, 3), "samples": samples, **summary(samples),
                "started_at": summary(samples, "started_at_s"), "cluster": cluster}
    finally:
        stop(agent)
        stop(controller)
        remove_labelled(b.version, flt_all)


# --- (b) git pull && docker-compose up -d, in a loop ----------------------

def write_compose(path, n, versions):
    lines = ["version: '2.4'", "services:"]
    for i in range(n):
        lines += [
            f"  {name(i)}:",
            f"    image: {IMAGE}",
            f"    command: {json.dumps(COMMAND)}",
            f"    mem_limit: {MEMORY_MIB}m",
            f"    stop_grace_period: {STOP_TIMEOUT}s",
            "    network_mode: none",
            f"    environment: {{{ENV_KEY}: \"{versions.get(i, 'v0')}\"}}",
            f"    labels: {{{LABEL}: \"1\"}}",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def compose_env(n):
    """Compose 1.x runs `up` as nested parallel loops sharing one limit
    (COMPOSE_PARALLEL_LIMIT, default 64): with more services than the limit
    the per-service workers hold every slot while their per-container work
    waits for one, and `up` hangs (seen at 100 services: 25 created, then
    idle). A limit of the service count plus 16 lets every per-service
    worker run and leaves 16 slots for the container work (twice the count
    let 1,000 creates run at once: a load average of 270 on 2 cores)."""
    env = dict(os.environ)
    env["COMPOSE_PARALLEL_LIMIT"] = str(max(64, n + 16))
    return env


BRING_UP = 100


def bench_compose(b, n, runs):
    d = os.path.join(b.work, f"compose-{n}")
    os.makedirs(d)
    project = f"glat{os.getpid()}n{n}"
    flt_all = filters(**{LABEL: None, "com.docker.compose.project": project})
    b.cleanups.append(("compose", project))
    remote, work = new_repo(d)
    versions = {}
    write_compose(os.path.join(work, "docker-compose.yml"), n, versions)
    commit_push(work, f"{n} services")
    deploy = os.path.join(d, "deploy")
    git(d, "clone", "-q", remote, "deploy")
    compose = b.compose + ["-p", project, "-f", os.path.join(deploy, "docker-compose.yml")]

    llog = LogCapture(os.path.join(LOGS, f"compose-loop-{n}.log"))
    t = time.perf_counter()
    cenv = compose_env(n)
    # Brought up BRING_UP services at a time: one `up -d` over 1,000
    # services with a limit above the count creates them all at once,
    # which the engine survives only slowly. The samples use the loop's
    # `up -d` over all services, as a user's script would.
    for lo in range(0, n, BRING_UP):
        batch = [name(i) for i in range(lo, min(n, lo + BRING_UP))]
        apply.run(compose + ["up", "-d", "--no-build", *batch], env=compose_env(len(batch)))
    up = time.perf_counter() - t
    await_count(b.version, flt_all, n, 60, "compose bring-up")  # confirms: all run once it returns
    print(f"  compose: {n} services up in {up:.1f} s (`up -d`, {BRING_UP} services at a time)",
          flush=True)

    # Back to back, no sleep: the fastest a polling loop can notice a push.
    # Output goes to the log (timestamped there): compose 1.x has no quiet
    # flag for `up`. A failing pull must not spin hot.
    q = " ".join(shlex.quote(c) for c in compose)
    script = (f"cd {shlex.quote(deploy)}\n"
              "while true; do\n"
              "  echo bench-loop pull\n"
              "  if git pull -q --ff-only; then\n"
              "    echo bench-loop up\n"
              f"    {q} up -d --no-build 2>&1 || sleep 0.2\n"
              "  else sleep 0.2; fi\n"
              "done\n")
    loop = spawn(["bash", "-c", script], llog, env={**cenv, **GIT_ENV})
    try:
        time.sleep(2)  # past the first pass of the loop
        samples = []
        for k, i in enumerate(changes(n, runs), 1):
            svc, value = name(i), f"v{k}"
            flt = filters(**{"com.docker.compose.project": project, "com.docker.compose.service": svc})
            api = Api(b.version)
            old = {c["Id"] for c in running(api, flt)}
            api.close()
            versions[i] = value
            write_compose(os.path.join(work, "docker-compose.yml"), n, versions)
            commit_push(work, f"{svc}: {ENV_KEY}={value}")
            t0, wall0 = time.perf_counter(), time.time()
            s = await_new(b.version, flt, old, value, t0, wall0, b.a.timeout, f"compose {svc}")
            s.pop("labels")
            # compose 1.x prints "Recreating P_svc_1", 2.x "Container P-svc-1  Recreate".
            s.update(service=svc, log={"recreate": llog.first(wall0, svc, "Recreat")})
            samples.append(s)
            print(f"  compose   run {k}: {svc} -> {value} converged {s['converged_s']:.3f} s, old gone "
                  f"{s['old_gone_s']:.3f} s, new started {s['started_at_s']:.3f} s; "
                  f"log: {json.dumps(s['log'])}", flush=True)
            time.sleep(1)
        # How long one pass of the loop takes at this N: the poll period.
        passes = llog.times(0, time.time(), "bench-loop pull")
        gaps = [b_ - a_ for a_, b_ in zip(passes, passes[1:])]
        period = round(statistics.median(gaps), 3) if gaps else None
        return {"services": n, "bring_up_s": round(up, 3), "samples": samples, **summary(samples),
                "started_at": summary(samples, "started_at_s"), "loop_pass_median_s": period,
                "loop_passes": len(passes), "project": project}
    finally:
        stop(loop)
        remove_labelled(b.version, flt_all)
        remove_networks(b.version, filters(**{"com.docker.compose.project": project}))


# --- main -------------------------------------------------------------------

class Bench:
    def __init__(self, a, binary, compose, version):
        self.a, self.binary, self.compose, self.version = a, binary, compose, version
        self.work = tempfile.mkdtemp(prefix="reconcile-gitops-bench-")
        self.cleanups = []

    def close(self):
        """Children first (a controller or a loop still running would start
        containers again), then containers by label, retrying."""
        apply.stop_children()
        for kind, what in self.cleanups:
            try:
                if kind == "reconcile":
                    remove_labelled(self.version, what)
                else:
                    remove_labelled(self.version, filters(**{LABEL: None, "com.docker.compose.project": what}))
                    remove_networks(self.version, filters(**{"com.docker.compose.project": what}))
            except Exception as e:  # report, and go on with the others
                print(f"cleanup: {e}", file=sys.stderr)
        shutil.rmtree(self.work, ignore_errors=True)


def fmt(x):
    return "-" if x is None else f"{x:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", default="100,1000", help="comma-separated N")
    ap.add_argument("--runs", type=int, default=5, help="changes per N and tool (K)")
    ap.add_argument("--tools", default="reconcile,compose")
    ap.add_argument("--timeout", type=float, default=600, help="seconds one change may take")
    ap.add_argument("--keep-going", action="store_true", help="after a failed N/tool, go on with the next")
    a = ap.parse_args()
    sizes = [int(x) for x in a.services.split(",")]
    tools = a.tools.split(",")
    if a.runs < 1 or any(n < 1 for n in sizes) or not set(tools) <= {"reconcile", "compose"}:
        ap.error("--runs and --services must be positive; --tools is reconcile and/or compose")
    started = time.perf_counter()

    if subprocess.run(["docker", "ps", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        sys.exit("Docker does not answer (scripts/docker-setup.sh starts it)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"image {IMAGE} is missing (scripts/docker-setup.sh builds it); this bench never pulls")
    binary = release_binary() if "reconcile" in tools else None
    compose, compose_version = compose_command()
    version = api_version()
    facts = machine_facts(f"{' '.join(compose)}: {compose_version}")
    facts["command"] = " ".join(["bench/gitops_latency.py"] + sys.argv[1:])
    facts["git"] = subprocess.run(["git", "--version"], stdout=subprocess.PIPE).stdout.decode().strip()
    print(json.dumps(facts, indent=2))
    os.makedirs(LOGS, exist_ok=True)

    b = Bench(a, binary, compose, version)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    result = {"facts": facts, "config": {"runs": a.runs, "poll_s": POLL, "memory_mib": MEMORY_MIB,
                                         "stop_timeout_s": STOP_TIMEOUT, "command": COMMAND},
              "results": {}}
    failed = False
    try:
        for n in sizes:
            r = result["results"][str(n)] = {}
            for tool in tools:
                print(f"{tool}: {n} services, {a.runs} changes", flush=True)
                try:
                    r[tool] = (bench_reconcile if tool == "reconcile" else bench_compose)(b, n, a.runs)
                except (RuntimeError, OSError, http.client.HTTPException) as e:
                    if not a.keep_going:
                        raise
                    failed = True
                    print(f"  {tool} at N={n} failed: {e}", flush=True)
                    r[tool] = {"services": n, "error": str(e)}
    except KeyboardInterrupt as e:
        print(f"interrupted ({e})", flush=True)
        result["interrupted"] = True
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("cleaning up ...", flush=True)
        b.close()
        facts["load_after"] = open("/proc/loadavg").read().split()[:3]
        facts["elapsed_s"] = round(time.perf_counter() - started, 1)
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, "gitops_latency.json"), "w") as f:
            json.dump(result, f, indent=2)
    if result.get("interrupted"):
        sys.exit(130)

    print(f"\nCommit to converged, one service changed per run ({a.runs} runs; from `git push` "
          f"returned to the new container running)\n")
    print("| services | reconcile median (s) | reconcile max (s) | compose loop median (s) "
          "| compose loop max (s) | reconcile/compose (median) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, r in result["results"].items():
        rc, co = r.get("reconcile", {}), r.get("compose", {})
        ratio = (f"{rc['median'] / co['median']:.2f}x" if rc.get("median") and co.get("median") else "-")
        print(f"| {n} | {fmt(rc.get('median'))} | {fmt(rc.get('max'))} | {fmt(co.get('median'))} "
              f"| {fmt(co.get('max'))} | {ratio} |")
    for n, r in result["results"].items():
        co = r.get("compose", {})
        if co.get("loop_pass_median_s") is not None:
            print(f"N={n}: one `git pull && up -d` pass takes {co['loop_pass_median_s']:.2f} s (median)")
    print(f"elapsed {facts['elapsed_s']:.0f} s; raw samples in bench/out/gitops_latency.json, "
          f"logs in bench/out/gitops_latency-logs/")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
