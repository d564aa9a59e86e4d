#!/usr/bin/env python3
"""Tenant isolation under load: does one tenant saturating its (limited)
table raise another tenant's latency?

Starts `dyno dev` (3 nodes, the control plane and its Postgres), makes two
tenants through the REST API -- `quiet` with an unlimited table and `noisy`
with a table limited to --limit operations per second -- and an API key for
each. Then runs the quiet tenant's workload at a fixed open-loop rate twice:
alone, and while the noisy tenant hammers its own table with --noisy-clients
closed-loop clients (most of its requests are throttled with 429). Prints
and writes the quiet tenant's p50/p99 in both runs.

    bench/isolation.sh [--rate 500] [--duration 15] [--out bench/ISOLATION.md]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare import Procs, log, machine  # noqa: E402


def call(method, url, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def login(cp, email, password):
    s, b = call("POST", f"{cp}/api/v1/auth/login", body={"email": email, "password": password})
    assert s == 200, b
    return b["token"]


def tenant(cp, root, name, limit):
    s, b = call("POST", f"{cp}/api/v1/tenants", root, {"name": name})
    assert s == 201, b
    email = f"ops@{name}.example.com"
    s, b = call("POST", f"{cp}/api/v1/tenants/{name}/users", root,
                {"email": email, "password": "isolation-bench", "role": "tenant_admin"})
    assert s == 201, b
    user = login(cp, email, "isolation-bench")
    spec = {"name": "ycsb", "n": 3, "r": 2, "w": 2, "conflict": "lww"}
    if limit:
        spec["throughput_limit"] = limit
    s, b = call("POST", f"{cp}/api/v1/tables", user, spec)
    assert s == 201, b
    s, key = call("POST", f"{cp}/api/v1/keys", user, {"name": "bench", "scopes": [{"table": "ycsb", "access": "write"}]})
    assert s == 201, key
    deadline = time.time() + 60
    while time.time() < deadline:
        _, t = call("GET", f"{cp}/api/v1/tables/ycsb", user)
        _, k = call("GET", f"{cp}/api/v1/keys/{key['id']}", user)
        if t["status"] == "active" and k["status"] == "active":
            return key["token"]
        time.sleep(0.2)
    raise RuntimeError(f"tenant {name}'s table and key did not become active")


def bench_cmd(args, urls, extra):
    cmd = [args.dyno, "bench", "--workload", "A", "--table", "ycsb", "--no-create",
           "--records", str(args.records), "--value-size", "1024", "--seed", "7", "--json", "--quiet"]
    for u in urls:
        cmd += ["--url", u]
    return cmd + extra


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dyno", required=True)
    ap.add_argument("--rate", type=float, default=500, help="the quiet tenant's open-loop rate (ops/s)")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--limit", type=int, default=300, help="the noisy table's throughput limit (ops/s)")
    ap.add_argument("--noisy-clients", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dyno-isolation-"))
    work.chmod(0o755)  # the dev Postgres runs as the postgres user when we are root
    procs = Procs(work)
    try:
        dev = work / "dev"
        p = procs.start("dev", [args.dyno, "dev", "--nodes", "3", "--base-port", "0", "--data-dir", str(dev)])
        deadline = time.time() + 180
        cluster = None
        while time.time() < deadline:
            f = dev / "cluster.json"
            if f.exists():
                cluster = json.loads(f.read_text())
                if cluster.get("demo"):
                    break
            if p.poll() is not None:
                raise RuntimeError("dyno dev exited; see " + str(work / "dev.log"))
            time.sleep(0.5)
        else:
            raise RuntimeError("dyno dev did not start")
        cp = cluster["controlplane"]
        urls = [n["http"] for n in cluster["nodes"]]
        root = login(cp, cluster["admin"]["email"], cluster["admin"]["password"])
        quiet = tenant(cp, root, "quiet", None)
        noisy = tenant(cp, root, "noisy", args.limit)
        env_q = {**__import__("os").environ, "DYNO_TOKEN": quiet}
        env_n = {**__import__("os").environ, "DYNO_TOKEN": noisy}

        def quiet_run(label, load):
            extra = ["--rate", str(args.rate), "--duration", str(args.duration), "--clients", "64"]
            if not load:
                extra.append("--skip-load")
            log(f"quiet tenant at {args.rate:.0f} ops/s, {label}")
            out = subprocess.run(bench_cmd(args, urls, extra), env=env_q, capture_output=True, text=True,
                                 timeout=600)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            r = json.loads(out.stdout)["runs"][-1]
            return {"throughput": r["throughput"], "p50_ms": r["overall"]["p50_ms"],
                    "p99_ms": r["overall"]["p99_ms"], "errors": r["overall"]["errors"]}

        alone = quiet_run("alone", True)
        log(f"noisy tenant: {args.noisy_clients} closed-loop clients on a table limited to {args.limit} ops/s")
        noisy_cmd = bench_cmd(args, urls, ["--clients", str(args.noisy_clients), "--skip-load",
                                           "--duration", str(args.duration + 6)])
        np_ = subprocess.Popen(noisy_cmd, env=env_n, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        together = quiet_run("while the noisy tenant saturates its table", False)
        nout, nerr = np_.communicate(timeout=600)
        nrun = json.loads(nout)["runs"][-1] if np_.returncode == 0 else None
        noisy_summary = {
            "attempted_per_s": (nrun["overall"]["count"] + nrun["overall"]["errors"]) / nrun["seconds"]
            if nrun and nrun.get("seconds") else None,
            "admitted_per_s": nrun["throughput"] if nrun else None,
            "refused": nrun["overall"]["errors"] if nrun else None,
        }
        rise = together["p99_ms"] - alone["p99_ms"]
        lines = [
            "# Tenant isolation under load",
            "",
            f"Measured by `bench/isolation.sh` on {machine()}: 3 nodes (`dyno dev`, R=2, W=2), "
            f"YCSB-A, 1 KiB values, {args.records} records per tenant. The quiet tenant runs open loop at "
            f"{args.rate:.0f} ops/s; the noisy tenant runs {args.noisy_clients} closed-loop clients against "
            f"its own table, limited to {args.limit} ops/s (the excess is refused with 429). "
            "Everything, the load generators included, shares the machine's cores.",
            "",
            "| quiet tenant | throughput (ops/s) | p50 (ms) | p99 (ms) | errors |",
            "|---|---|---|---|---|",
            f"| alone | {alone['throughput']:.0f} | {alone['p50_ms']:.2f} | {alone['p99_ms']:.2f} | {alone['errors']} |",
            f"| with the noisy tenant | {together['throughput']:.0f} | {together['p50_ms']:.2f} | "
            f"{together['p99_ms']:.2f} | {together['errors']} |",
            "",
            f"Noisy tenant: {json.dumps(noisy_summary)}.",
            "",
            f"p99 rise for the quiet tenant: {rise:+.2f} ms ({together['p99_ms'] / max(alone['p99_ms'], 1e-9):.2f}x).",
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
