#!/usr/bin/env python3
"""Property-based run of the controller's API from its own OpenAPI document.

Starts a real `reconcile controller` on 127.0.0.1 (a free port, a temporary
data directory, a directory source whose one service wants 0 tasks, so no
Docker is needed), joins one node through `POST /v1/join`, makes a reader
token with the CLI, and runs schemathesis against the served
`/v1/openapi.json` in five phases: no credentials, a wrong token, the
reader token, the join token, the operator token (last: it may change
things). In every phase:

- no answer is a 5xx, every status code is one the document declares for
  the operation, and a body conforms to the declared content type and
  schema;
- the controller is still running and answers `/healthz` afterwards.

In the first four phases the requests that may change something are
refused, and that is checked too: what the controller holds (nodes,
tokens, suspension, passes, services and events, read with the operator
token) is the same before and after, and every audit-log line written
during the phase is `denied` (401/403). The only exception is
`/v1/join` with the join token, which that token exists for.

Usage: tests/external/.venv/bin/python tests/external/api_fuzz.py \
           --reconcile target/debug/reconcile [--examples N] \
           [--phase-seconds S] [--seed N]
Exits 0 with a summary when every property holds, 1 naming the first
failure, 2 for a usage error. The controller is killed on exit, whatever
happens.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

API_TOKEN = "fuzz-operator-token-0123456789abcdef"
JOIN_TOKEN = "fuzz-join-token-0123456789abcdef"
# Shaped like a named token, so it is looked up among the stored hashes.
WRONG_TOKEN = "rct_" + "0" * 64
CLUSTER = "fuzz"
NODE = "fuzz-node-1"

SOURCE = f"""\
apiVersion: reconcile/v1alpha1
kind: Cluster
metadata: {{name: {CLUSTER}}}
spec: {{}}
---
apiVersion: reconcile/v1alpha1
kind: TaskDefinition
metadata: {{name: app}}
spec:
  networkMode: bridge
  containerDefinitions:
    - name: app
      image: busybox:stable
      command: [sleep, "3600"]
      memory: 32
---
apiVersion: reconcile/v1alpha1
kind: Service
metadata: {{name: app}}
spec:
  cluster: {CLUSTER}
  taskDefinition: app
  desiredCount: 0
"""

# Path parameters that name what exists, so that a refused request is
# refused for its credential and not because it names nothing; bodies,
# queries and headers are still generated.
SCHEMATHESIS_CONFIG = f"""\
[[operations]]
include-path-regex = "^/v1/nodes/"
parameters = {{ "path.name" = "{NODE}" }}

[[operations]]
include-path-regex = "^/v1/services/"
parameters = {{ "path.cluster" = "{CLUSTER}", "path.name" = "app" }}

# A followed event stream stays open for as long as its reader wants,
# which a fuzzer reading whole replies cannot end: it gets the backlog
# (tests/events.rs follows one).
[[operations]]
include-path = "/v1/events"
parameters = {{ "query.follow" = false }}

[warnings]
fail-on = ["unresolvable_reference", "unmatched_filter", "missing_deserializer"]
"""

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


class Failure(Exception):
    """A property that does not hold; the message says which and why."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, token=None, body=None, timeout=10):
    """(status, parsed JSON or text) of one request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Controller:
    """A `reconcile controller` process and what it needs."""

    def __init__(self, binary, work):
        self.binary = binary
        self.work = work
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = work / "data"
        self.log = work / "controller.log"
        self.proc = None

    def start(self):
        source = self.work / "source"
        source.mkdir()
        (source / "app.yaml").write_text(SOURCE)
        env = dict(os.environ, RECONCILE_API_TOKEN=API_TOKEN, RECONCILE_JOIN_TOKEN=JOIN_TOKEN)
        with open(self.log, "wb") as log:
            # Long interval and node timeout: between two snapshots nothing
            # may change on its own. Plain HTTP on loopback: what is under
            # test is the API, not TLS (tests/tls.rs has that).
            self.proc = subprocess.Popen(
                [self.binary, "controller", "--source", str(source),
                 "--data-dir", str(self.data),
                 "--listen", f"127.0.0.1:{self.port}",
                 "--interval", "3600", "--node-timeout", "3600", "--plain-http"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"the controller exited with {self.proc.returncode} at start")
            try:
                if request(self.base, "GET", "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise Failure("the controller did not answer /healthz within 30 s")
        # The first pass registers the task definition and the service.
        while time.monotonic() < deadline:
            if self.status().get("passes", 0) >= 1:
                return
            time.sleep(0.2)
        raise Failure("the controller made no pass within 30 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def alive(self):
        if self.proc.poll() is not None:
            raise Failure(f"the controller exited with {self.proc.returncode}")
        try:
            status, body = request(self.base, "GET", "/healthz", timeout=10)
        except OSError as e:
            raise Failure(f"/healthz: {e}") from None
        if status != 200:
            raise Failure(f"/healthz answered {status}: {body!r}")

    def get(self, path):
        status, body = request(self.base, "GET", path, token=API_TOKEN)
        if status != 200:
            raise Failure(f"GET {path} with the operator token answered {status}: {body!r}")
        return body

    def status(self):
        return self.get("/v1/status")

    def snapshot(self):
        """What the controller holds, without what changes by itself."""
        status = self.status()
        return {
            "nodes": sorted(
                (n["name"], n["cluster"], n["status"], n.get("tasks"))
                for n in self.get("/v1/nodes")
            ),
            "tokens": sorted(
                (t["name"], t["role"], t["expiresAt"]) for t in self.get("/v1/tokens")
            ),
            "tasks": sorted(t["id"] for t in self.get("/v1/tasks")),
            "suspended": status.get("suspended"),
            "tornDown": status.get("tornDown"),
            "passes": status.get("passes"),
            "events": len(status.get("events", [])),
            "services": [
                {
                    "service": s["service"],
                    "revision": s["revision"],
                    "desiredCount": s.get("desiredCount"),
                    "held": s.get("held"),
                    "deployments": [(d["id"], d["status"], d["rolloutState"]) for d in s["deployments"]],
                    "events": len(s["events"]),
                }
                for s in status.get("services", [])
            ],
        }

    def settled(self):
        """The snapshot once it no longer changes: the node's first
        heartbeat starts a pass, which must end before a phase begins."""
        last = self.snapshot()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(1)
            now = self.snapshot()
            if now == last:
                return now
            last = now
        raise Failure("the controller's state kept changing for 20 s before the first phase")

    def audit_size(self):
        path = self.data / "audit.log"
        return path.stat().st_size if path.exists() else 0

    def audit_since(self, offset):
        path = self.data / "audit.log"
        if not path.exists():
            return []
        with open(path, "rb") as f:
            f.seek(offset)
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]

    def tail(self, lines=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def set_up(c):
    """Join the node and make it report once; make a reader token."""
    status, reply = request(c.base, "POST", "/v1/join", token=JOIN_TOKEN,
                            body={"name": NODE, "cluster": CLUSTER})
    if status != 200:
        raise Failure(f"POST /v1/join answered {status}: {reply!r}")
    heartbeat = {"cluster": CLUSTER, "cpu": 1024, "memory": 1024,
                 "agentVersion": "fuzz", "tasks": []}
    status, reply = request(c.base, "POST", f"/v1/nodes/{NODE}/heartbeat",
                            token=reply["token"], body=heartbeat)
    if status != 200:
        raise Failure(f"the heartbeat of {NODE} answered {status}: {reply!r}")
    out = subprocess.run(
        [c.binary, "token", "create", "fuzz-reader", "--role", "reader",
         "--format", "json", "--controller", c.base],
        env=dict(os.environ, RECONCILE_API_TOKEN=API_TOKEN),
        capture_output=True, text=True, timeout=30, check=False,
    )
    if out.returncode != 0:
        raise Failure(f"`reconcile token create` exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)["token"]


def run_schemathesis(c, work, phase, token, args):
    """Run schemathesis once; its output is kept in WORK/PHASE.txt."""
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(work / "schemathesis.toml"), "--no-color",
        "run", f"{c.base}/v1/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(args.examples),
        "--max-time", str(args.phase_seconds),
        # One worker: hypothesis parses source with `ast` while it runs, and
        # CPython before 3.11.8 can fail that from two threads at once
        # ("AST constructor recursion depth mismatch").
        "--workers", "1",
        "--request-timeout", "10",
        "--phases", "examples,coverage,fuzzing",
        "--suppress-health-check", "too_slow,filter_too_much",
    ]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if token is not None:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    output = work / f"{phase}.txt"
    env = dict(os.environ, SCHEMATHESIS_HOOKS="ndjson_hooks",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
    with open(output, "wb") as out:
        try:
            # In WORK: schemathesis keeps a cache in its working directory.
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=work, env=env,
                                timeout=args.phase_seconds + 60, check=False).returncode
        except subprocess.TimeoutExpired:
            raise Failure(f"{phase}: schemathesis ran past its time budget") from None
    text = output.read_text(errors="replace")
    if rc != 0:
        # The failures and the summary are at the end.
        raise Failure(f"{phase}: schemathesis exited {rc}:\n" + "\n".join(text.splitlines()[-80:]))
    # "Test cases:" is followed by "N generated, ...".
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.strip() == "Test cases:"), None)
    return lines[at + 1].strip() if at is not None and at + 1 < len(lines) else "no summary"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reconcile", required=True, help="the reconcile binary (target/debug/reconcile)")
    p.add_argument("--examples", type=int, default=10, help="examples per operation and phase")
    p.add_argument("--phase-seconds", type=int, default=12, help="time budget of each phase")
    p.add_argument("--seed", type=int, help="schemathesis seed, to replay a run")
    args = p.parse_args()
    binary = os.path.abspath(args.reconcile)
    if not os.access(binary, os.X_OK):
        p.error(f"--reconcile {args.reconcile}: not an executable")

    # SIGTERM (a CI timeout) unwinds like an error, so the controller is
    # killed in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("api-fuzz: terminated"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="api-fuzz-") as tmp:
        work = Path(tmp)
        (work / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
        c = Controller(binary, work)
        try:
            c.start()
            reader = set_up(c)
            c.settled()
            phases = [
                ("no credentials", None, "refused"),
                ("a wrong token", WRONG_TOKEN, "refused"),
                ("the reader token", reader, "refused"),
                ("the join token", JOIN_TOKEN, "join"),
                ("the operator token", API_TOKEN, None),
            ]
            for name, token, refused in phases:
                phase = name.replace(" ", "-")
                before = c.snapshot() if refused else None
                offset = c.audit_size()
                t0 = time.monotonic()
                cases = run_schemathesis(c, work, phase, token, args)
                c.alive()
                if refused:
                    after = c.snapshot()
                    if after != before:
                        raise Failure(
                            f"{name}: the controller's state changed\n"
                            f"  before: {json.dumps(before, sort_keys=True)}\n"
                            f"  after:  {json.dumps(after, sort_keys=True)}")
                    lines = c.audit_since(offset)
                    for line in lines:
                        # What the join token is for (any method: the
                        # route answers 405 to all but POST after the gate).
                        if refused == "join" and line.get("target") == "/v1/join":
                            continue
                        if line.get("result") != "denied" or line.get("status") not in (401, 403):
                            raise Failure(f"{name}: an audited request was not refused: {json.dumps(line)}")
                    audited = f", {len(lines)} audited refusals"
                else:
                    audited = ""
                print(f"api-fuzz: {name}: ok in {time.monotonic() - t0:.0f} s ({cases}{audited})")
        except Exception as e:  # noqa: BLE001 - any failure is reported alike
            what = str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}"
            print(f"api-fuzz: FAILED: {what}", file=sys.stderr)
            print(f"--- controller log (last lines) ---\n{c.tail()}", file=sys.stderr)
            return 1
        finally:
            c.stop()
    print(f"api-fuzz: every phase passed in {time.monotonic() - started:.0f} s: "
          "no 5xx, documented statuses and schemas, the controller alive, "
          "nothing persisted from refused requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
