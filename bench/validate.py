#!/usr/bin/env python3
"""Validation throughput: `reconcile validate` on N generated manifests
against check-jsonschema (an independent JSON Schema validator) on the same
files with the same published schema, measured in the same run.

Usage: bench/validate.py [--manifests 10000] [--runs 5]
Prints a Markdown table row for BENCHMARKS.md and writes bench/out/validate.json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"


def timed(cmd, expect_ok=True):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if expect_ok and r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stdout[-2000:]!r} {r.stderr[-2000:]!r}")
    return dt, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifests", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    venv = os.path.join(ROOT, "bench", "out", "venv")
    peer_bin = os.path.join(venv, "bin", "check-jsonschema")
    if not os.path.exists(peer_bin):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", CHECK_JSONSCHEMA], check=True)
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "reconcile")
    schema = os.path.join(ROOT, "schemas", "manifest.json")

    work = tempfile.mkdtemp(prefix="reconcile-bench-")
    try:
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen_manifests.py"), str(a.manifests), work], check=True)
        files = sorted(os.path.join(work, f) for f in os.listdir(work))
        assert len(files) == a.manifests

        ours = []
        timed([binary, "validate", work, "--format", "json"])  # warm-up (page cache)
        for _ in range(a.runs):
            dt, r = timed([binary, "validate", work, "--format", "json"])
            report = json.loads(r.stdout)
            assert report["valid"] and report["documents"] == a.manifests, report
            ours.append(dt)

        # One run of the peer: it is the slow side, and its time is stable.
        peer, r = timed([peer_bin, "--schemafile", schema, *files])
        assert b"ok -- validation done" in r.stdout, r.stdout[-500:]

        med = statistics.median(ours)
        result = {
            "manifests": a.manifests,
            "reconcile_runs_s": ours,
            "reconcile_median_s": med,
            "reconcile_per_s": a.manifests / med,
            "check_jsonschema_s": peer,
            "check_jsonschema_per_s": a.manifests / peer,
            "ratio": peer / med,
        }
        os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
        with open(os.path.join(ROOT, "bench", "out", "validate.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(f"| {a.manifests} manifests | reconcile validate {med:.3f} s "
              f"({result['reconcile_per_s']:,.0f}/s, median of {a.runs}) | "
              f"check-jsonschema {peer:.1f} s ({result['check_jsonschema_per_s']:,.0f}/s) | "
              f"{result['ratio']:.0f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
