"""The printed table, and each target judged PASS, MISS or SKIP."""

from .common import MIB

TARGETS = {
    "healthz_direct_of_hello": 0.50,
    "healthz_direct_app_us": 20.0,
    "healthz_ratio": 0.40,
    "get_task_ratio": 0.20,
    "get_unfinished_ratio": 0.25,
    "post_task_ratio": 0.12,
    "list_direct_of_reference": 0.75,
    "list_ratio": 0.12,
    "root_ratio": 0.15,
    "root_p99_ms": 50.0,
    "root_c256_p99_ms": 25.0,
    "serve_idle_mib": 20.0,
    "serve_peak_mib": 60.0,
    "tasks_idle_mib": 20.0,
    "startup_ms": 150.0,
    "tasks_per_s": 2000.0,
}


# The process whose CPU the "app µs/req" column shows on a reference row.
REFERENCE_PROCESS = {"hello_direct": "hello", "db_reference_direct": "db_reference"}


def fmt_mib(b):
    return f"{b / MIB:.1f} MiB" if b is not None else "n/a"


def verdict(ok):
    return "PASS" if ok else "MISS"


def report(results):
    lines = []
    meta = results["meta"]
    lines.append(f"benchmark {meta['date']}  commit {meta['commit']}  {meta['cpus']} CPUs  "
                 f"load {meta['loadavg_start']} -> {meta['loadavg_end']}  compilers running at start: "
                 f"{meta['compilers_at_start']}")
    for e in meta["experiments"]:
        lines.append(f"EXPERIMENT (not the project's configuration): {e}")
    if results["http"]:
        lines.append(f"wrk {meta['wrk_threads']} threads, {meta['connections']} connections, {meta['warmup_s']} s "
                     f"warm-up + {meta['duration_s']} s per row; ratio = req/s / static req/s "
                     f"({results['static_base_rps']:.0f}, mean of the first and last static rows); "
                     "app µs/req = CPU time of `app serve` (of the hello server on its row) per request")
        lines.append("")
        hdr = f"{'HTTP (through nginx unless direct)':<38} {'log':<5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} " \
              f"{'errors':>7} {'ratio':>6} {'app µs/req':>10}"
        lines.append(hdr)
        lines.append("-" * len(hdr))
        for r in results["http"]:
            app_cpu = r["cpu_us_per_req"].get(REFERENCE_PROCESS.get(r.get("key"), "serve"))
            app_cpu = f"{app_cpu:.0f}" if app_cpu else "-"
            lines.append(f"{r['name']:<38} {r['log']:<5} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} "
                         f"{r['p99_ms']:>8.2f} {r['errors']:>7} {r['ratio']:>6.2f} {app_cpu:>10}")
    if results["tasks"]:
        lines.append("")
        hdr = f"{'tasks (wordcount, 1 worker, posted through nginx)':<50} {'conc.':>5} {'tasks':>6} " \
              f"{'seconds':>8} {'tasks/s':>8}"
        lines.append(hdr)
        lines.append("-" * len(hdr))
        for t in results["tasks"]:
            lines.append(f"{t['mode']:<50} {t['concurrency']:>5} {t['tasks']:>6} {t['seconds']:>8.2f} "
                         f"{t['tasks_per_s']:>8.0f}")
    m = results["memory"]
    lines.append("")
    line = f"memory   serve: idle {fmt_mib(m['serve_idle'])}"
    if "serve_peak" in m:
        line += f", peak {fmt_mib(m['serve_peak'])} (RUST_LOG=info rows)"
    if "serve_warn_peak" in m:
        line += f"; idle {fmt_mib(m['serve_warn_idle'])}, peak {fmt_mib(m['serve_warn_peak'])} (warn rows)"
    lines.append(line)
    line = f"         tasks: idle {fmt_mib(m['tasks_idle'])}"
    if "tasks_peak" in m:
        line += f", peak {fmt_mib(m['tasks_peak'])} (end-to-end row)"
    lines.append(line)
    s = results["startup"]
    if s:
        lines.append(f"start-up launch -> first 200 on /healthz: median {s['median_ms']} ms (runs {s['runs_ms']})")
    z = results["sizes"]
    image = f"{fmt_mib(z['standin_image'])} ({z['standin_note']})" if z["standin_image"] else z["standin_note"]
    pg = results.get("postgres_stats")
    if pg:
        lines.append(f"postgres {pg['commits']} commits; tasks table: {pg['task_inserts']} inserts, "
                     f"{pg['task_updates']} updates ({pg['task_hot_updates']} HOT), {pg['autovacuums']} autovacuums")
    lines.append(f"sizes    release binary {fmt_mib(z['binary'])}; stand-in app image {image}")
    lines.append("")
    lines.append("targets (judged on the default RUST_LOG=info rows)")
    for t in results["targets"]:
        lines.append(f"  {t['verdict']:<4}  {t['target']:<44} {t['measured']}")
    return "\n".join(lines)


def judge(results):
    rows = {(r["key"], r["log"]): r for r in results["http"]}
    m, t = results["memory"], []

    def add(target, ok, measured):
        t.append({"target": target, "verdict": "SKIP" if ok is None else verdict(ok), "measured": measured})

    d, hello = rows.get(("healthz_direct", "info")), rows.get(("hello_direct", "-"))
    if d and hello and hello["rps"]:
        share = d["rps"] / hello["rps"]
        add("/healthz direct >= 50% of bare axum hello", share >= TARGETS["healthz_direct_of_hello"],
            f"{share * 100:.0f}% ({d['rps']:.0f} of {hello['rps']:.0f} req/s)")
    else:
        add("/healthz direct >= 50% of bare axum hello", None, "not measured")
    us = d["cpu_us_per_req"].get("serve") if d else None
    if us:
        add("/healthz direct <= 20 µs app CPU per request", us <= TARGETS["healthz_direct_app_us"], f"{us:.0f} µs")
    else:
        add("/healthz direct <= 20 µs app CPU per request", None, "not measured")
    h = rows.get(("healthz_nginx", "info"))
    if h:
        add("/healthz via nginx >= 40% of static", h["ratio"] >= TARGETS["healthz_ratio"],
            f"{h['ratio'] * 100:.0f}% ({h['rps']:.0f} req/s)")
    else:
        add("/healthz via nginx >= 40% of static", None, "not measured")
    r = rows.get(("root_nginx", "info"))
    if r:
        add("/ via nginx >= 15% of static", r["ratio"] >= TARGETS["root_ratio"],
            f"{r['ratio'] * 100:.1f}% ({r['rps']:.0f} req/s)")
        add("/ via nginx p99 < 50 ms at 64 connections", r["p99_ms"] < TARGETS["root_p99_ms"],
            f"{r['p99_ms']:.1f} ms")
    else:
        add("/ via nginx >= 15% of static", None, "not measured")
        add("/ via nginx p99 < 50 ms at 64 connections", None, "not measured")
    r = rows.get(("root_nginx_c256", "info"))
    name = "/ via nginx p99 <= 25 ms at 256 connections"
    if r:
        add(name, r["p99_ms"] <= TARGETS["root_c256_p99_ms"], f"{r['p99_ms']:.1f} ms ({r['rps']:.0f} req/s)")
    else:
        add(name, None, "not measured")
    for key, target, name in (("get_task_nginx", "get_task_ratio", "GET /api/tasks/{id} via nginx >= 20% of static"),
                              ("get_unfinished_nginx", "get_unfinished_ratio",
                               "GET /api/tasks/{id} unfinished via nginx >= 25% of static"),
                              ("post_task_nginx", "post_task_ratio", "POST /api/tasks via nginx >= 12% of static")):
        r = rows.get((key, "info"))
        if r:
            add(name, r["ratio"] >= TARGETS[target], f"{r['ratio'] * 100:.1f}% ({r['rps']:.0f} req/s)")
        else:
            add(name, None, "not measured")
    name = "GET /api/tasks?limit=10 direct >= 75% of the reference"
    d, ref = rows.get(("list_tasks_direct", "info")), rows.get(("db_reference_direct", "-"))
    if d and ref and ref["rps"]:
        share = d["rps"] / ref["rps"]
        same = results["meta"].get("db_reference_same_bytes")
        add(name, share >= TARGETS["list_direct_of_reference"],
            f"{share * 100:.0f}% ({d['rps']:.0f} of {ref['rps']:.0f} req/s; {results['meta'].get('db_readers')} reader "
            f"connections, prepared statements; {'same bytes' if same else 'NOT the same bytes'})")
    else:
        add(name, None, "not measured")
    r = rows.get(("list_tasks_nginx", "info"))
    name = "GET /api/tasks?limit=10 via nginx >= 12% of static"
    if r:
        add(name, r["ratio"] >= TARGETS["list_ratio"], f"{r['ratio'] * 100:.1f}% ({r['rps']:.0f} req/s)")
    else:
        add(name, None, "not measured")
    add("serve idle RSS <= 20 MiB", m["serve_idle"] <= TARGETS["serve_idle_mib"] * MIB, fmt_mib(m["serve_idle"]))
    if "serve_peak" in m:
        add("serve peak RSS <= 60 MiB", m["serve_peak"] <= TARGETS["serve_peak_mib"] * MIB,
            fmt_mib(m["serve_peak"]))
    else:
        add("serve peak RSS <= 60 MiB", None, "not measured")
    add("tasks idle RSS <= 20 MiB", m["tasks_idle"] <= TARGETS["tasks_idle_mib"] * MIB, fmt_mib(m["tasks_idle"]))
    if results["startup"]:
        s = results["startup"]["median_ms"]
        add("start-up to first 200 <= 150 ms", s <= TARGETS["startup_ms"], f"{s} ms (median)")
    else:
        add("start-up to first 200 <= 150 ms", None, "not measured")
    if results["tasks"]:
        e = results["tasks"][0]
        add(">= 2000 tasks/s end to end, 1 worker", e["tasks_per_s"] >= TARGETS["tasks_per_s"],
            f"{e['tasks_per_s']:.0f} tasks/s (WORKER_CONCURRENCY {e['concurrency']})")
    else:
        add(">= 2000 tasks/s end to end, 1 worker", None, "not measured")
    return t
