#!/usr/bin/env python3
"""Cold apply against the local Docker engine, side by side in one run:

  (a) `reconcile apply SRC --auto-approve --settle 0` (release build; a fresh
      source directory and a fresh RECONCILE_STATE_DIR every run),
  (b) `docker-compose up -d` (or `docker compose up -d`) of the same
      containers from a generated compose file,
  (c) the raw Engine API floor: POST /containers/create + /start over the
      unix socket, 16 at a time (reconcile's apply concurrency),

for N single-container services (busybox:stable `sleep 3600`, 32 MiB memory
limit, stop timeout 2 s, no health check, no ports), once per network mode.
Each run is timed until the command returns, and also until the last
container of the run started (the latest State.StartedAt, read after the
run: no polling load during it). Rounds rotate the order of the three.

Then (d) a no-op plan over M running tasks brought up with reconcile:
`reconcile plan SRC` against `docker ps -a --filter label=reconcile.io/source=ID`
and the raw API list call (GET /containers/json?all=1&filters=...) it makes.

Everything created is labelled bench.reconcile=1 and removed by that label at
the end, also on failure or Ctrl-C. The image must exist locally: nothing is
ever pulled.

Usage: bench/apply.py [--services 50] [--runs 5] [--network bridge,none]
                      [--noop-services 100 --noop-tasks 5] [--noop-runs 10]
                      [--skip-cold] [--skip-noop]
Prints Markdown tables and writes bench/out/apply.json.
"""
import argparse
import concurrent.futures
import datetime
import hashlib
import http.client
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
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "busybox:stable"
LABEL = "bench.reconcile"
CONCURRENCY = 16  # apply::Options::default().concurrency
MEMORY_MIB = 32
STOP_TIMEOUT = 2


# --- Engine API over the unix socket -------------------------------------

def socket_path():
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        sys.exit(f"DOCKER_HOST={host}: only unix sockets are supported")
    return host[len("unix://"):]


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Api:
    """One keep-alive connection; not shared between threads."""

    def __init__(self, version=None):
        self.conn = UnixHTTPConnection(socket_path())
        self.prefix = f"/v{version}" if version else ""

    def call(self, method, path, body=None, ok=(200, 201, 204)):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, self.prefix + path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        if r.status not in ok:
            raise RuntimeError(f"{method} {path}: {r.status} {raw[:300]!r}")
        return json.loads(raw) if raw and r.getheader("Content-Type", "").startswith("application/json") else raw

    def close(self):
        self.conn.close()


def api_version():
    a = Api()
    try:
        return a.call("GET", "/version")["ApiVersion"]
    finally:
        a.close()


def filters(**labels):
    f = {"label": [f"{k}={v}" if v is not None else k for k, v in labels.items()]}
    return urllib.parse.quote(json.dumps(f))


def containers(version, label_filter):
    """All containers (running or not) matching label filters."""
    a = Api(version)
    try:
        return a.call("GET", f"/containers/json?all=1&filters={label_filter}")
    finally:
        a.close()


def parallel(fn, items, workers=CONCURRENCY):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


def remove_labelled(version, label_filter, attempts=5):
    """Force-remove every container matching the filter (kills them), until
    none is left: a removal the daemon refuses while the container is being
    created or already being removed (409) is retried."""
    removed = 0
    for attempt in range(attempts):
        cs = containers(version, label_filter)
        if not cs:
            return removed

        def rm(c):
            a = Api(version)
            try:
                a.call("DELETE", f"/containers/{c['Id']}?force=1&v=1", ok=(204, 404, 409))
            finally:
                a.close()

        # Fewer workers than the bench itself: cleanup must not be what
        # overloads the daemon.
        parallel(rm, cs, workers=4)
        removed += len(cs)
        time.sleep(0.5 * attempt)
    left = containers(version, label_filter)
    if left:
        raise RuntimeError(f"{len(left)} containers could not be removed: "
                           + ", ".join(c["Names"][0] for c in left[:5]))
    return removed


def remove_networks(version, label_filter):
    a = Api(version)
    try:
        nets = a.call("GET", f"/networks?filters={label_filter}")
        for n in nets:
            a.call("DELETE", f"/networks/{n['Id']}", ok=(204, 404, 409))
    finally:
        a.close()


def parse_ts(s):
    """Docker RFC 3339 with nanoseconds -> Unix seconds (float)."""
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        frac = (frac + "000000")[:6]
        s = f"{head}.{frac}"
    else:
        s = s + ".000000"
    dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def last_started(version, label_filter, expect):
    """Check that `expect` containers run; return the latest StartedAt."""
    cs = containers(version, label_filter)
    running = [c for c in cs if c["State"] == "running"]
    if len(running) != expect or len(cs) != expect:
        raise RuntimeError(f"expected {expect} running containers, found {len(running)} running of {len(cs)}")

    def started(c):
        a = Api(version)
        try:
            return parse_ts(a.call("GET", f"/containers/{c['Id']}/json")["State"]["StartedAt"])
        finally:
            a.close()

    return max(parallel(started, running))


# --- helpers ---------------------------------------------------------------

# Children run in sessions of their own so that an interrupted bench can stop
# them (and whatever they started) before it cleans up: removing containers
# while a `compose up` or an `apply` still creates them leaves the daemon with
# half-created containers.
CHILDREN = set()
CHILDREN_LOCK = threading.Lock()


def stop_groups(procs, grace=10):
    """SIGTERM each child's process group, SIGKILL what is left after
    `grace` seconds."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def stop_children(grace=10):
    with CHILDREN_LOCK:
        procs = list(CHILDREN)
    stop_groups(procs, grace)


def run(cmd, env=None, check=True, capture=True):
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None, start_new_session=True)
    with CHILDREN_LOCK:
        CHILDREN.add(p)
    try:
        out, err = p.communicate()
    finally:
        with CHILDREN_LOCK:
            CHILDREN.discard(p)
    r = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if check and r.returncode != 0:
        out = (r.stdout or b"")[-3000:].decode(errors="replace")
        err = (r.stderr or b"")[-3000:].decode(errors="replace")
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}\n{out}\n{err}")
    return r


def timed(cmd, env=None):
    wall = time.time()
    t = time.perf_counter()
    r = run(cmd, env=env)
    return time.perf_counter() - t, wall, r


def p95(v):
    """Nearest-rank 95th percentile (with 5 samples: the maximum)."""
    s = sorted(v)
    k = max(1, -(-95 * len(s) // 100))
    return s[k - 1]


def stats(v):
    return {"runs": v, "median": statistics.median(v), "p95": p95(v)}


def release_binary():
    run(["cargo", "build", "--release", "-q"], capture=False)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "reconcile")
    if not os.access(path, os.X_OK):
        sys.exit(f"no release binary at {path}")
    return path


def compose_command():
    for cmd in (["docker", "compose"], ["docker-compose"]):
        try:
            r = subprocess.run(cmd + ["version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            continue
        if r.returncode == 0:
            return cmd, r.stdout.decode().splitlines()[0]
    sys.exit("neither `docker compose` nor `docker-compose` is installed "
             "(Debian: apt-get install -y docker-compose)")


def machine_facts(compose):
    def out(cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
        except FileNotFoundError:
            return "n/a"
    info = json.loads(out(["docker", "info", "--format", "{{json .}}"]) or "{}")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": out(["nproc"]),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "n/a"),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": os.uname().release,
        "docker_server": out(["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"]),
        "docker_client": out(["docker", "version", "--format", "{{.Client.Version}}"]),
        "storage_driver": info.get("Driver", "n/a"),
        "cgroup": f"{info.get('CgroupDriver', '?')} v{info.get('CgroupVersion', '?')}",
        "compose": compose,
        "containers_before": info.get("Containers", "n/a"),
        "load_before": open("/proc/loadavg").read().split()[:3],
        "reconcile_source": git_state(),
    }


def git_state():
    """The commit the binary was built from, and whether src/ differed."""
    def out(*cmd):
        return subprocess.run(["git", "-C", ROOT, *cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode().strip()
    head = out("rev-parse", "--short", "HEAD")
    diff = out("diff", "HEAD", "--", "src", "Cargo.toml", "Cargo.lock")
    if not diff:
        return head
    return f"{head} + uncommitted changes (diff sha256 {hashlib.sha256(diff.encode()).hexdigest()[:12]})"


# --- the three ways to bring up N containers --------------------------------

def write_source(dir, n, network, count=1, prefix="svc"):
    os.makedirs(dir, exist_ok=True)
    with open(os.path.join(dir, "cluster.yaml"), "w") as f:
        f.write("apiVersion: reconcile/v1alpha1\nkind: Cluster\nmetadata: {name: bench}\nspec: {}\n")
    for i in range(n):
        with open(os.path.join(dir, f"{prefix}-{i:03d}.yaml"), "w") as f:
            f.write(f"""apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: {prefix}-{i:03d}}}
spec:
  networkMode: {network}
  containerDefinitions:
    - name: main
      image: {IMAGE}
      command: ["sleep", "3600"]
      memory: {MEMORY_MIB}
      stopTimeout: {STOP_TIMEOUT}
      dockerLabels: {{{LABEL}: "1"}}
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: {prefix}-{i:03d}}}
spec:
  cluster: bench
  taskDefinition: {prefix}-{i:03d}
  desiredCount: {count}
""")


def write_compose(path, n, network):
    lines = ["version: '2.4'", "services:"]
    for i in range(n):
        lines += [
            f"  svc-{i:03d}:",
            f"    image: {IMAGE}",
            "    command: [\"sleep\", \"3600\"]",
            f"    mem_limit: {MEMORY_MIB}m",
            f"    stop_grace_period: {STOP_TIMEOUT}s",
            f"    network_mode: {network}",
            f"    labels: {{{LABEL}: \"1\"}}",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def reconcile_env(state_dir):
    env = dict(os.environ)
    env["RECONCILE_STATE_DIR"] = state_dir
    env["NO_COLOR"] = "1"
    return env


class Bench:
    def __init__(self, args, binary, compose, version):
        self.a = args
        self.binary = binary
        self.compose = compose
        self.version = version
        self.work = tempfile.mkdtemp(prefix="reconcile-apply-bench-")
        self.seq = 0

    def fresh(self, what):
        self.seq += 1
        d = os.path.join(self.work, f"{what}-{self.seq:03d}")
        os.makedirs(d)
        return d

    # (a)
    def reconcile(self, n, network):
        d = self.fresh("reconcile")
        src, state = os.path.join(d, "src"), os.path.join(d, "state")
        write_source(src, n, network)
        dt, wall, r = timed([self.binary, "apply", src, "--auto-approve", "--settle", "0"],
                            env=reconcile_env(state))
        if b"Apply complete" not in r.stdout:
            raise RuntimeError(f"reconcile apply did not complete: {r.stdout[-500:]!r}")
        source_id = source_id_of(src)
        f = filters(**{LABEL: None, "reconcile.io/source": source_id})
        last = last_started(self.version, f, n) - wall
        remove_labelled(self.version, f)
        shutil.rmtree(d, ignore_errors=True)
        return dt, last

    # (b)
    def compose_up(self, n, network):
        d = self.fresh("compose")
        path = os.path.join(d, "docker-compose.yml")
        write_compose(path, n, network)
        project = f"rbench{os.getpid()}x{self.seq}"
        dt, wall, _ = timed(self.compose + ["-p", project, "-f", path, "up", "-d", "--no-build"])
        f = filters(**{LABEL: None, "com.docker.compose.project": project})
        last = last_started(self.version, f, n) - wall
        remove_labelled(self.version, f)
        remove_networks(self.version, filters(**{"com.docker.compose.project": project}))
        shutil.rmtree(d, ignore_errors=True)
        return dt, last

    # (c)
    def direct(self, n, network):
        self.seq += 1
        run_label = f"direct-{os.getpid()}-{self.seq}"
        version = self.version

        def body(i):
            return {
                "Image": IMAGE,
                "Cmd": ["sleep", "3600"],
                "Labels": {LABEL: "1", "bench.run": run_label, "bench.index": str(i)},
                "Healthcheck": {"Test": ["NONE"]},
                "StopTimeout": STOP_TIMEOUT,
                "HostConfig": {"Memory": MEMORY_MIB * 2**20, "NetworkMode": network},
            }

        local = threading.local()
        opened = []

        def one(i):
            # One keep-alive connection per worker, like a pooled client.
            if not hasattr(local, "api"):
                local.api = Api(version)
                opened.append(local.api)
            cid = local.api.call("POST", f"/containers/create?name=rbench-{run_label}-{i:03d}", body(i))["Id"]
            local.api.call("POST", f"/containers/{cid}/start")

        wall = time.time()
        t = time.perf_counter()
        parallel(one, range(n))
        dt = time.perf_counter() - t
        for a in opened:
            a.close()
        f = filters(**{LABEL: None, "bench.run": run_label})
        last = last_started(version, f, n) - wall
        remove_labelled(version, f)
        return dt, last

    def cold(self, network):
        n, runs = self.a.services, self.a.runs
        tools = [("reconcile apply", self.reconcile), ("compose up -d", self.compose_up),
                 ("raw API create+start x16", self.direct)]
        res = {name: {"exit": [], "last_started": []} for name, _ in tools}
        for rnd in range(runs + 1):
            order = tools[rnd % 3:] + tools[:rnd % 3]
            for name, fn in order:
                dt, last = fn(n, network)
                tag = "warm-up" if rnd == 0 else f"run {rnd}"
                print(f"  [{network}] {tag:8} {name:26} exit {dt:6.3f} s  last container started at {last:6.3f} s",
                      flush=True)
                if rnd > 0:
                    res[name]["exit"].append(dt)
                    res[name]["last_started"].append(last)
                time.sleep(1)  # let the daemon settle after the removals
        return {name: {k: stats(v) for k, v in r.items()} for name, r in res.items()}

    # (d)
    def noop(self):
        n, count, runs = self.a.noop_services, self.a.noop_tasks, self.a.noop_runs
        network = self.a.network.split(",")[0]
        d = self.fresh("noop")
        src, state = os.path.join(d, "src"), os.path.join(d, "state")
        write_source(src, n, network, count=count, prefix="noop")
        env = reconcile_env(state)
        total = n * count
        print(f"  bringing up {n} services x {count} tasks with reconcile apply ...", flush=True)
        up, _, r = timed([self.binary, "apply", src, "--auto-approve", "--settle", "0"], env=env)
        sid = source_id_of(src)
        f = filters(**{"reconcile.io/source": sid})
        live = [c for c in containers(self.version, f) if c["State"] == "running"]
        if len(live) != total:
            raise RuntimeError(f"expected {total} running tasks, found {len(live)}")
        print(f"  up in {up:.1f} s; {total} tasks running", flush=True)

        plan_cmd = [self.binary, "plan", src, "--detailed-exitcode"]
        ps_cmd = ["docker", "ps", "-a", "--filter", f"label=reconcile.io/source={sid}"]
        path = f"/containers/json?all=1&filters={f}"

        def raw_list():
            t = time.perf_counter()
            a = Api(self.version)
            try:
                body = a.call("GET", path)
            finally:
                a.close()
            dt = time.perf_counter() - t
            assert len(body) == total, len(body)
            return dt

        def plan_once():
            dt, _, r = timed(plan_cmd, env=env)  # exit 0: no changes (2 would be changes)
            if b"No changes" not in r.stdout:
                raise RuntimeError(f"plan is not a no-op: {r.stdout[-500:]!r}")
            return dt

        def ps_once():
            dt, _, r = timed(ps_cmd)
            assert len(r.stdout.splitlines()) == total + 1
            return dt

        res = {"reconcile plan": [], "docker ps -a --filter": [], "raw API list": []}
        fns = {"reconcile plan": plan_once, "docker ps -a --filter": ps_once, "raw API list": raw_list}
        for rnd in range(runs + 1):
            for name, fn in fns.items():
                dt = fn()
                if rnd > 0:
                    res[name].append(dt)
        out = {name: stats(v) for name, v in res.items()}
        print("  tearing down with reconcile destroy --auto-approve ...", flush=True)
        down, _, _ = timed([self.binary, "destroy", src, "--auto-approve"], env=env)
        left = containers(self.version, f)
        if left:
            raise RuntimeError(f"{len(left)} containers left after destroy")
        shutil.rmtree(d, ignore_errors=True)
        out["_meta"] = {"services": n, "tasks_per_service": count, "tasks": total, "network": network,
                        "apply_up_s": up, "destroy_s": down, "source_id": sid}
        return out

    def close(self):
        remove_labelled(self.version, filters(**{LABEL: None}))
        shutil.rmtree(self.work, ignore_errors=True)


def source_id_of(path):
    """reconcile's source id: model::digest of the canonical path (SHA-256
    of its JSON string, first 16 hex digits)."""
    canonical = os.path.realpath(path)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def ms(x):
    return f"{x * 1e3:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--network", default="bridge,none", help="comma-separated network modes")
    ap.add_argument("--noop-services", type=int, default=100)
    ap.add_argument("--noop-tasks", type=int, default=5)
    ap.add_argument("--noop-runs", type=int, default=10)
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-noop", action="store_true")
    a = ap.parse_args()

    binary = release_binary()
    compose, compose_version = compose_command()
    if subprocess.run(["docker", "image", "inspect", IMAGE], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"image {IMAGE} is missing (scripts/docker-setup.sh builds it); this bench never pulls")
    version = api_version()
    facts = machine_facts(f"{' '.join(compose)}: {compose_version}")
    facts["command"] = " ".join(["bench/apply.py"] + sys.argv[1:])
    print(json.dumps(facts, indent=2))

    b = Bench(a, binary, compose, version)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    result = {"facts": facts, "cold": {}, "noop": None}
    try:
        if not a.skip_cold:
            for network in a.network.split(","):
                print(f"cold apply of {a.services} containers, network {network}: 1 warm-up + {a.runs} runs each")
                result["cold"][network] = b.cold(network)
        if not a.skip_noop:
            print(f"no-op plan over {a.noop_services * a.noop_tasks} running tasks")
            result["noop"] = b.noop()
    finally:
        stop_children()
        b.close()
        facts["load_after"] = open("/proc/loadavg").read().split()[:3]
        facts["containers_after"] = json.loads(subprocess.run(
            ["docker", "info", "--format", "{{json .}}"], stdout=subprocess.PIPE).stdout or b"{}").get("Containers")

    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "apply.json"), "w") as f:
        json.dump(result, f, indent=2)

    for network, r in result["cold"].items():
        ap_, co, di = r["reconcile apply"], r["compose up -d"], r["raw API create+start x16"]
        print(f"\nCold start of {a.services} containers, network {network} ({a.runs} runs; p95 = nearest rank)\n")
        print("| tool | exit median (ms) | exit p95 (ms) | last container started, median (ms) | p95 (ms) |")
        print("|---|---:|---:|---:|---:|")
        for name, s in r.items():
            print(f"| {name} | {ms(s['exit']['median'])} | {ms(s['exit']['p95'])} | "
                  f"{ms(s['last_started']['median'])} | {ms(s['last_started']['p95'])} |")
        for metric in ("exit", "last_started"):
            m = ap_[metric]["median"]
            print(f"{metric}: apply/compose {m / co[metric]['median']:.2f}x (target <= 0.8x), "
                  f"apply/direct {m / di[metric]['median']:.2f}x (target <= 1.1x)")
    if result["noop"]:
        r = result["noop"]
        meta = r["_meta"]
        print(f"\nNo-op plan over {meta['tasks']} running tasks ({meta['services']} services x "
              f"{meta['tasks_per_service']}, {a.noop_runs} runs)\n")
        print("| command | median (ms) | p95 (ms) |")
        print("|---|---:|---:|")
        for name in ("reconcile plan", "docker ps -a --filter", "raw API list"):
            print(f"| {name} | {ms(r[name]['median'])} | {ms(r[name]['p95'])} |")
        m = r["reconcile plan"]["median"]
        print(f"plan/docker ps {m / r['docker ps -a --filter']['median']:.2f}x, "
              f"plan/raw list {m / r['raw API list']['median']:.2f}x (targets < 2x and < 200 ms)")
        print(f"bring-up {meta['apply_up_s']:.1f} s, destroy {meta['destroy_s']:.1f} s")


if __name__ == "__main__":
    main()
