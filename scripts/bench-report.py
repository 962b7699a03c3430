#!/usr/bin/env python3
"""Builds the README's performance table from the RESULT lines of the bench-*.sh logs.

Usage: bench-report.py DIR [--readme README.md]

DIR is one run of scripts/bench-report.sh (target/bench-report/<date>-<commit>/): every
*.log in it is scanned for `RESULT bench=<name> key=value ...` lines, meta.txt gives the
run's date, commit, kernel, HAProxy version and knobs. Writes DIR/table.md; with --readme,
also replaces what is between `<!-- perf-table:begin -->` and `<!-- perf-table:end -->`.
Standard library only.
"""

import argparse
import glob
import os
import sys

BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"
PROXIES = ("baseline", "sidewire", "haproxy")


def parse_results(d):
    res = []
    for path in sorted(glob.glob(os.path.join(d, "*.log"))):
        with open(path, errors="replace") as f:
            for line in f:
                if not line.startswith("RESULT "):
                    continue
                kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
                kv["_log"] = os.path.basename(path)
                res.append(kv)
    return res


def parse_meta(d):
    meta = {}
    path = os.path.join(d, "meta.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    meta[k] = v
    return meta


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Results:
    def __init__(self, rows):
        self.rows = rows

    def get(self, **want):
        for r in self.rows:
            if all(r.get(k) == str(v) for k, v in want.items()):
                return r
        return None

    def has(self, bench):
        return any(r.get("bench") == bench for r in self.rows)


def ratio(a, b):
    a, b = num(a), num(b)
    if a is None or b is None or b <= 0 or a < 0:
        return None
    return a / b


def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}x"


def cell(v, unit="", extra=None):
    if v is None or v == "" or v == "-":
        s = "–"
    else:
        s = f"{v}{unit}"
    if extra:
        s += f" ({extra})"
    return s


def goal_ratio(limit, r):
    """Goal: sidewire/HAProxy ≤ limit."""
    if r is None:
        return f"≤ {limit}x HAProxy: n/a"
    return f"≤ {limit}x HAProxy: {'met' if r <= limit else 'not met'}"


def build_table(res, meta):
    R = Results(res)
    rows = []
    missing = []

    def add(measurement, base, sw, ha, rat, goal):
        rows.append((measurement, base, sw, ha, rat, goal))

    # --- opaque TCP (bench-tcp.sh) ---
    if R.has("tcp"):
        t = {p: R.get(bench="tcp", proxy=p) or {} for p in PROXIES}
        r = ratio(t["sidewire"].get("bulk_cpu_s_per_gib"), t["haproxy"].get("bulk_cpu_s_per_gib"))
        add("opaque bulk CPU-s/GiB (Gbit/s)",
            *[cell(t[p].get("bulk_cpu_s_per_gib"), extra=f"{t[p].get('bulk_gbit_s', '?')} Gbit/s") for p in PROXIES],
            fmt_ratio(r), goal_ratio(0.6, r))
        r = ratio(t["sidewire"].get("churn_cpu_us_per_conn"), t["haproxy"].get("churn_cpu_us_per_conn"))
        add("opaque churn CPU-µs/conn (conn/s)",
            *[cell(t[p].get("churn_cpu_us_per_conn"), extra=f"{t[p].get('churn_conn_s', '?')} conn/s") for p in PROXIES],
            fmt_ratio(r), goal_ratio(0.8, r))
    else:
        missing.append("bench-tcp.sh")
    # --- the churn floor (bench-ring-floor.sh): what the connection's own syscalls and the
    # kernel's TCP work cost under a minimal io_uring loop, beside both proxies, paired reps ---
    f = R.get(bench="ring-floor")
    if f:
        add(f"opaque churn beside the io_uring floor (`loadtest ring-floor`), CPU-µs/conn, protocol={f.get('protocol', '?')}, "
            f"median of {f.get('reps', '?')} paired reps",
            cell(f.get("floor_us"), extra="floor"), cell(f.get("sidewire_us")), cell(f.get("haproxy_us")),
            f"{f.get('sw_ha', '?')}x", f"reference: floor/sidewire {f.get('floor_sw', '?')}x, floor/HAProxy {f.get('floor_ha', '?')}x")
    else:
        missing.append("bench-ring-floor.sh")

    # --- HTTP/1 (bench-http1.sh) ---
    if R.has("http1"):
        t = {p: R.get(bench="http1", proxy=p) or {} for p in PROXIES}
        r = ratio(t["sidewire"].get("max_cpu_us_per_req"), t["haproxy"].get("max_cpu_us_per_req"))
        add("HTTP/1 closed loop CPU-µs/req (req/s)",
            *[cell(t[p].get("max_cpu_us_per_req"), extra=f"{t[p].get('max_req_s', '?')} req/s") for p in PROXIES],
            fmt_ratio(r), goal_ratio(0.8, r))
        rate = t["sidewire"].get("rate", "?")
        r = ratio(t["sidewire"].get("rate_cpu_us_per_req"), t["haproxy"].get("rate_cpu_us_per_req"))
        add(f"HTTP/1 at {rate}/s CPU-µs/req (p99)",
            *[cell(t[p].get("rate_cpu_us_per_req"), extra=f"p99 {t[p].get('rate_p99_us', '?')} µs") for p in PROXIES],
            fmt_ratio(r), goal_ratio(0.8, r))
        if t["sidewire"].get("close_cpu_us_per_conn") is not None:
            r = ratio(t["sidewire"].get("close_cpu_us_per_conn"), t["haproxy"].get("close_cpu_us_per_conn"))
            add("HTTP/1 churn, one request per connection, CPU-µs/conn (conn/s)",
                *[cell(t[p].get("close_cpu_us_per_conn"), extra=f"{t[p].get('close_conn_s', '?')} conn/s") for p in PROXIES],
                fmt_ratio(r), goal_ratio(0.8, r))
    else:
        missing.append("bench-http1.sh")

    # --- HTTP/2 (bench-h2.sh) ---
    if R.has("h2"):
        for kind, label in (("h2h1", "h2→h1"), ("h2h2", "h2→h2")):
            t = {p: R.get(bench="h2", kind=kind, proxy=p) or {} for p in PROXIES}
            r = ratio(t["sidewire"].get("max_cpu_us_per_req"), t["haproxy"].get("max_cpu_us_per_req"))
            add(f"{label} closed loop CPU-µs/req (req/s)",
                *[cell(t[p].get("max_cpu_us_per_req"), extra=f"{t[p].get('max_req_s', '?')} req/s") for p in PROXIES],
                fmt_ratio(r), goal_ratio(0.8, r))
            rate = t["sidewire"].get("rate", "?")
            r = ratio(t["sidewire"].get("rate_cpu_us_per_req"), t["haproxy"].get("rate_cpu_us_per_req"))
            add(f"{label} at {rate}/s CPU-µs/req",
                *[cell(t[p].get("rate_cpu_us_per_req")) for p in PROXIES],
                fmt_ratio(r), goal_ratio(0.8, r))
    else:
        missing.append("bench-h2.sh")

    # --- idle RSS (bench-idle.sh, KIND=opaque/http1/http2) ---
    for kind, label, goal_kib in (("opaque", "opaque", 2), ("http1", "HTTP/1", 4), ("http2", "HTTP/2", 8)):
        sw = R.get(bench="idle", kind=kind, proxy="sidewire")
        ha = R.get(bench="idle", kind=kind, proxy="haproxy")
        if not sw and not ha:
            missing.append(f"bench-idle.sh KIND={kind}")
            continue
        sw, ha = sw or {}, ha or {}
        v = num(sw.get("bytes_per_conn"))
        met = "n/a" if v is None else ("met" if v <= goal_kib * 1024 else "not met")
        n = sw.get("open") or ha.get("open") or "?"
        proto = f", protocol={sw.get('protocol') or ha.get('protocol')}" if kind == "opaque" else ""
        settle = sw.get("settle_s") or ha.get("settle_s")
        when = f", {settle} s after opening" if settle else ""
        at_open = sw.get("bytes_per_conn_at_open")
        sw_cell = cell(sw.get("bytes_per_conn"), " B") + (f" ({at_open} B at open)" if at_open else "")
        ha_open = ha.get("bytes_per_conn_at_open")
        ha_cell = cell(ha.get("bytes_per_conn"), " B") + (f" ({ha_open} B at open)" if ha_open else "")
        add(f"idle RSS per connection, {label} (B, {n} conns{proto}{when})", "–",
            sw_cell, ha_cell,
            fmt_ratio(ratio(sw.get("bytes_per_conn"), ha.get("bytes_per_conn"))),
            f"≤ {goal_kib} KiB: {met}")

    # --- added latency (bench-latency.sh) ---
    if R.has("latency"):
        kinds, rates = [], []
        for r in res:
            if r.get("bench") == "latency":
                if r["kind"] not in kinds:
                    kinds.append(r["kind"])
                if r["rate"] not in rates:
                    rates.append(r["rate"])
        labels = {"http1": "HTTP/1", "h2h1": "h2→h1", "h2h2": "h2→h2"}
        for kind in kinds:
            for rate in rates:
                t = {p: R.get(bench="latency", kind=kind, rate=rate, proxy=p) for p in PROXIES}
                if not any(t.values()):
                    continue
                t = {p: v or {} for p, v in t.items()}
                for q, qlabel in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
                    def added(p):
                        m = t[p].get(f"add_{q}_us")
                        if m in (None, "-"):
                            return "–"
                        return f"{int(m):+d} ({t[p].get(f'add_{q}_min')}..{t[p].get(f'add_{q}_max')})"
                    sw, ha = num(t["sidewire"].get(f"add_{q}_us")), num(t["haproxy"].get(f"add_{q}_us"))
                    rat = fmt_ratio(sw / ha) if sw is not None and ha is not None and sw >= 0 and ha > 0 else "n/a"
                    met = "n/a" if sw is None or ha is None else ("met" if sw <= ha else "not met")
                    errs = sum(int(t[p].get("errors", 0) or 0) for p in PROXIES)
                    base = t["baseline"].get(f"{q}_us")
                    conns = t["sidewire"].get("conns") or t["baseline"].get("conns")
                    conns = f", {conns} conns" if conns and kind == "http1" else ""
                    add(f"{labels.get(kind, kind)} at {rate}/s{conns}, added {qlabel} µs (min..max over reps)"
                        + (f" — {errs} errors" if errs else ""),
                        cell(base, extra="absolute") if base not in (None, "-") else "–",
                        added("sidewire"), added("haproxy"), rat, f"≤ HAProxy: {met}")
    else:
        missing.append("bench-latency.sh")

    # --- HTTP/1 bodies (bench-body.sh, when it exists) ---
    if R.has("body"):
        # Each case compares with the same request through the opaque listener
        # (opaque-<case>; `get` with `opaque`). Older logs have only opaque and opaque-post:
        # uploads then use opaque-post, downloads opaque.
        def opaque_ref(case):
            same = "opaque" if case == "get" else f"opaque-{case}"
            older = "opaque-post" if "post" in case else "opaque"
            r = (R.get(bench="body", case=same, proxy="sidewire")
                 or R.get(bench="body", case=older, proxy="sidewire")
                 or R.get(bench="body", case="opaque", proxy="sidewire") or {})
            return num(r.get("mib_s")), num(r.get("cpu_s_per_gib"))
        cases = []
        for r in res:
            if r.get("bench") == "body" and r.get("case") not in cases:
                cases.append(r.get("case"))
        for case in cases:
            t = {p: R.get(bench="body", case=case, proxy=p) or {} for p in PROXIES}
            ref = case.startswith("opaque")
            opq_mib, opq_cpu = opaque_ref(case)
            sw_mib, sw_cpu = num(t["sidewire"].get("mib_s")), num(t["sidewire"].get("cpu_s_per_gib"))
            if ref:
                g_mib = g_cpu = "reference (the opaque path)"
            else:
                g_mib = "≥ opaque/1.1: " + ("n/a" if sw_mib is None or opq_mib is None else ("met" if sw_mib * 1.1 >= opq_mib else "not met"))
                g_cpu = "≤ 1.1x opaque: " + ("n/a" if sw_cpu is None or opq_cpu is None else ("met" if sw_cpu <= 1.1 * opq_cpu else "not met"))
            label = {"opaque": "opaque path, same body (GET)", "opaque-post": "opaque path, same upload (POST)",
                     "opaque-chunked-get": "opaque path, same chunked GET",
                     "opaque-chunked-post": "opaque path, same chunked upload"}.get(case, f"HTTP/1 body {case}")
            add(f"{label} MiB/s", *[cell(t[p].get("mib_s")) for p in PROXIES],
                fmt_ratio(ratio(t["sidewire"].get("mib_s"), t["haproxy"].get("mib_s"))), g_mib)
            add(f"{label} CPU-s/GiB", *[cell(t[p].get("cpu_s_per_gib")) for p in PROXIES],
                fmt_ratio(ratio(t["sidewire"].get("cpu_s_per_gib"), t["haproxy"].get("cpu_s_per_gib"))), g_cpu)
            copy = R.get(bench="body", case=case, proxy="sidewire-copy") or {}
            if copy.get("cpu_s_per_gib") not in (None, "-"):
                add(f"{label} CPU-s/GiB, splicing off (`splice_body_bytes = 0`)", "–",
                    cell(copy.get("cpu_s_per_gib")), cell(t["haproxy"].get("cpu_s_per_gib")),
                    fmt_ratio(ratio(copy.get("cpu_s_per_gib"), t["haproxy"].get("cpu_s_per_gib"))),
                    "for comparison (bodies copied through user space)")
    else:
        missing.append("bench-body.sh" + (" (not present)" if meta.get("body") == "absent" else ""))

    out = ["| measurement | baseline | sidewire | HAProxy | sidewire/HAProxy | goal |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return out, missing


def knobs(res, meta):
    parts = []
    t = next((r for r in res if r.get("bench") == "tcp"), None)
    if t:
        parts.append(f"tcp: {t.get('bulk_bytes')} bulk, {t.get('churn_secs')} s churn, protocol={t.get('protocol')}, median of {t.get('reps')}")
    h = next((r for r in res if r.get("bench") == "http1"), None)
    if h:
        parts.append(f"http1: {h.get('conns')} conns, {h.get('secs')} s, median of {h.get('reps')}")
    h = next((r for r in res if r.get("bench") == "h2"), None)
    if h:
        parts.append(f"h2: h2load -c {h.get('conns')} -m {h.get('streams')}, {h.get('secs')} s, median of {h.get('reps')}")
    i = next((r for r in res if r.get("bench") == "idle"), None)
    if i:
        parts.append(f"idle: N={i.get('n')}, opaque protocol={meta.get('idle_protocol', '?')}")
    if meta.get("latency_knobs"):
        parts.append("latency: " + meta["latency_knobs"].split("; proxy on CPU")[0])
    parts.append("proxies one worker/thread pinned to CPU 1, load and backends on CPU 0")
    return "; ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--readme")
    a = ap.parse_args()
    res = parse_results(a.dir)
    meta = parse_meta(a.dir)
    table, missing = build_table(res, meta)
    quick = " QUICK=1 (smoke test: too short to quote)." if meta.get("quick") == "1" else ""
    head = (f"Generated by `scripts/bench-report.sh` on {meta.get('date', '?')}, commit "
            f"{meta.get('commit', '?')}, Linux {meta.get('kernel', '?')}, {meta.get('haproxy', 'HAProxy ?')}, "
            f"{meta.get('cpus', '?')} CPUs, took {meta.get('elapsed_min', '?')} min.{quick} Knobs: {knobs(res, meta)}. "
            "CPU is the proxy's time on CPU, all threads, from /proc/<pid>/task/*/schedstat (ns resolution); CPU and RSS ratios below 1x mean sidewire is cheaper.")
    lines = [head, ""] + table
    errs = [r for r in res if int(num(r.get("errors")) or 0) > 0]
    if errs:
        lines += ["", "Errors: " + ", ".join(f"{r.get('bench')} {r.get('kind', '')} {r.get('rate', '')} {r.get('proxy')}: {r.get('errors')}".replace("  ", " ") for r in errs) + "."]
    if missing:
        lines += ["", "Not measured in this run: " + ", ".join(missing) + "."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.dir, "table.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    if a.readme:
        with open(a.readme) as f:
            readme = f.read()
        if BEGIN not in readme or END not in readme:
            sys.exit(f"bench-report.py: {a.readme} lacks the {BEGIN} / {END} markers")
        pre, rest = readme.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        with open(a.readme, "w") as f:
            f.write(pre + BEGIN + "\n" + text + END + post)


if __name__ == "__main__":
    main()
