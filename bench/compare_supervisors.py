#!/usr/bin/env python3
"""Watcher figures of circuit, Circus and supervisord, measured by the same code
(issue 5). Started by bench/compare-supervisors.sh, which makes the virtualenv,
builds circuit and owns the temp dir; run that, not this.

Every figure comes from /proc, the same way for the three systems:
  respawn  kill -9 the one child of a 1-process watcher, then poll /proc (about
           every 1 ms) until another child of the daemon runs `sleep` (state S
           or R); median over N kills, spaced 2.5 to 3.5 s apart (random, seeded) (clear of circuit's
           flapping window and supervisord's startsecs=1).
  start    a 100-process watcher defined but not started: from issuing its start
           request (circuit: spawning `circuit mkwatch`; Circus: the `start`
           command through circus.client; supervisord: startProcessGroup over
           its XML-RPC unix socket) until 100 children of the daemon run `sleep`.
  RSS      VmRSS summed over the daemon and its descendants that are not the
           supervised `sleep`s, with the 100 running.
  CPU      utime+stime of those same processes over the idle window, as % of
           one core.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

TCK = os.sysconf("SC_CLK_TCK")
SLEEP = "/bin/sleep"
PIDFILE = None  # "pid starttime" lines of the daemons we started, for cleanup


def readstat(pid):
    """(comm, state, ppid, cpu ticks, starttime) of pid, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1 : s.rindex(")")]
    f = s[s.rindex(")") + 2 :].split()
    return comm, f[0], int(f[1]), int(f[11]) + int(f[12]), int(f[19])


def all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def descendants(root):
    kids = {}
    for pid in all_pids():
        st = readstat(pid)
        if st:
            kids.setdefault(st[2], []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class Kids:
    """Children of one daemon, found by scanning /proc; the parent of a pid that
    is not the daemon's child is cached (no pid is reused within one poll)."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.ppid = {}

    def running_sleeps(self):
        out = []
        for pid in all_pids():
            pp = self.ppid.get(pid)
            if pp is not None and pp != self.daemon:
                continue
            st = readstat(pid)
            if st is None:
                continue
            self.ppid[pid] = st[2]
            if st[2] == self.daemon and st[0] == "sleep" and st[1] in "RS":
                out.append(pid)
        return out


def wait_for(cond, timeout, what):
    t = time.monotonic()
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() - t > timeout:
            raise RuntimeError(f"timeout ({timeout} s) waiting for {what}")
        time.sleep(0.001)


def supervisor_procs(daemon):
    """The daemon and its helpers: itself and its descendants not running sleep."""
    procs = [daemon]
    for pid in descendants(daemon):
        st = readstat(pid)
        if st and st[0] != "sleep":
            procs.append(pid)
    return procs


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def ticks(pids):
    return sum((readstat(p) or (0, 0, 0, 0))[3] for p in pids)


def record(pid):
    st = readstat(pid)
    with open(PIDFILE, "a") as f:
        f.write(f"{pid} {st[4] if st else 0}\n")


def spawn_daemon(argv, log, **kw):
    p = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        start_new_session=True,  # its own process group, killed at the end
        **kw,
    )
    record(p.pid)
    return p


def kill_tree(pid, started=None):
    """SIGKILL pid's descendants (by pid), then pid and its process group, if
    pid is still the process we started (same start time)."""
    st = readstat(pid)
    if st is None or (started is not None and st[4] != started):
        return
    for d in descendants(pid):
        try:
            os.kill(d, signal.SIGKILL)
        except OSError:
            pass
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass


def stop_daemon(proc, polite):
    """Ask politely, then TERM, then KILL the whole tree; reap. Whatever the
    daemon had started and left behind (same pid and start time) is killed too."""
    before = [(q, (readstat(q) or (0,) * 5)[4]) for q in descendants(proc.pid)]
    try:
        polite()
    except Exception as e:  # noqa: BLE001 - best effort
        print(f"  (polite stop failed: {e})", file=sys.stderr)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    kill_tree(proc.pid)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)
    for q, started in before:  # nothing should be left; belt and braces
        st = readstat(q)
        if st and st[4] == started:
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass


def measure(daemon, stop_one, start_hundred, kills, idle):
    """The four figures, the same code for every system."""
    r = {}
    k = Kids(daemon)
    wait_for(lambda: len(k.running_sleeps()) == 1, 30, "the 1-process watcher")
    lat = []
    rnd = random.Random(5)
    for _ in range(kills):
        k = Kids(daemon)
        cur = wait_for(lambda: k.running_sleeps(), 10, "a running child")
        if len(cur) != 1:
            raise RuntimeError(f"expected 1 child, found {len(cur)}")
        old = cur[0]
        t = time.perf_counter()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: [p for p in k.running_sleeps() if p != old], 10, "a respawn")
        lat.append(time.perf_counter() - t)
        time.sleep(2.5 + rnd.random())  # random phase against periodic loops
    r["respawn"] = lat
    stop_one()
    k = Kids(daemon)
    wait_for(lambda: not k.running_sleeps(), 30, "the 1-process watcher to stop")

    k = Kids(daemon)
    err = []

    def go():
        try:
            start_hundred()
        except Exception as e:  # noqa: BLE001
            err.append(e)

    th = threading.Thread(target=go, daemon=True)
    t = time.perf_counter()
    th.start()
    wait_for(lambda: len(k.running_sleeps()) >= 100 or err, 60, "100 running children")
    if err:
        raise err[0]
    r["start"] = time.perf_counter() - t
    th.join(timeout=30)

    time.sleep(3)  # settle (supervisord: startsecs=1 transitions)
    procs = supervisor_procs(daemon)
    t0, w0 = ticks(procs), time.monotonic()
    time.sleep(idle)
    procs1 = supervisor_procs(daemon)
    t1, w1 = ticks(procs), time.monotonic()
    r["rss_kib"] = rss_kib(procs1)
    r["procs"] = len(procs1)
    r["names"] = sorted((readstat(q) or ("?",))[0] for q in procs1)
    r["ticks"] = t1 - t0
    r["cpu_pct"] = (t1 - t0) / TCK / (w1 - w0) * 100
    r["idle"] = w1 - w0
    r["children"] = len(Kids(daemon).running_sleeps())
    return r


# ---- the three systems -------------------------------------------------------


def run_circuit(a):
    d = os.path.join(a.tmp, "circuit")
    os.makedirs(d)
    p = spawn_daemon([a.circuit, "start", "-a", "127.0.0.1:0"], os.path.join(d, "server.log"),
                     stdout=subprocess.PIPE)
    url = p.stdout.readline().decode().strip()
    if not url.startswith("circuit://"):
        raise RuntimeError(f"circuit start printed {url!r}")
    sid = "/" + url.rsplit("/", 1)[1]

    def cli(*args, stdin=None, quiet=False):
        subprocess.run([a.circuit, *args], input=stdin, check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)

    def spec(n):
        return json.dumps({"Path": SLEEP, "Args": ["3600"], "NumProcesses": n}).encode()

    def polite():
        for w in ("one", "hundred"):
            try:
                cli("scrub", "-d", url, f"{sid}/{w}", quiet=True)
            except subprocess.CalledProcessError:
                pass
        cli("stop", "-d", url, sid)

    try:
        cli("mkwatch", "-d", url, f"{sid}/one", stdin=spec(1))
        return measure(
            p.pid,
            lambda: cli("scrub", "-d", url, f"{sid}/one"),
            lambda: cli("mkwatch", "-d", url, f"{sid}/hundred", stdin=spec(100)),
            a.kills, a.idle)
    finally:
        stop_daemon(p, polite)


def run_circus(a):
    from circus.client import CircusClient  # from the virtualenv

    d = os.path.join(a.tmp, "circus")
    os.makedirs(d)
    ep = f"ipc://{d}/ctl.sock"
    # No stats_endpoint line: giving one turns circusd-stats on. Defaults
    # otherwise (check_delay = 5 s, the period at which exits are noticed).
    ini = os.path.join(d, "circus.ini")
    with open(ini, "w") as f:
        f.write(f"""[circus]
endpoint = {ep}
pubsub_endpoint = ipc://{d}/pub.sock
statsd = False

[watcher:one]
cmd = {SLEEP} 3600
numprocesses = 1
respawn = True

[watcher:hundred]
cmd = {SLEEP} 3600
numprocesses = 100
respawn = True
autostart = False
""")
    p = spawn_daemon([os.path.join(a.venv, "bin", "circusd"), "--log-output",
                      os.path.join(d, "circusd.log"), ini], os.path.join(d, "stderr.log"),
                     stdout=subprocess.DEVNULL)
    client = CircusClient(endpoint=ep, timeout=30)

    def call(cmd, **props):
        res = client.call({"command": cmd, "properties": props})
        if res.get("status") != "ok":
            raise RuntimeError(f"circus {cmd}: {res}")
        return res

    try:
        wait_for(lambda: p.poll() is not None or os.path.exists(f"{d}/ctl.sock"), 30, "circusd")
        if p.poll() is not None:
            raise RuntimeError(f"circusd exited with {p.returncode}; see its log")
        return measure(
            p.pid,
            lambda: call("stop", name="one", waiting=True),
            lambda: call("start", name="hundred"),
            a.kills, a.idle)
    finally:
        stop_daemon(p, lambda: client.call({"command": "quit", "properties": {}}))


def run_supervisord(a):
    import xmlrpc.client

    from supervisor.xmlrpc import SupervisorTransport  # from the virtualenv

    d = os.path.join(a.tmp, "supervisord")
    os.makedirs(d)
    sock = f"{d}/supervisor.sock"
    conf = os.path.join(d, "supervisord.conf")
    with open(conf, "w") as f:
        f.write(f"""[unix_http_server]
file = {sock}

[supervisord]
logfile = {d}/supervisord.log
pidfile = {d}/supervisord.pid
childlogdir = {d}
nodaemon = true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{sock}

[program:one]
command = {SLEEP} 3600
autorestart = true
stdout_logfile = NONE
stderr_logfile = NONE

[program:hundred]
command = {SLEEP} 3600
process_name = %(program_name)s_%(process_num)03d
numprocs = 100
autostart = false
autorestart = true
stdout_logfile = NONE
stderr_logfile = NONE
""")
    p = spawn_daemon([os.path.join(a.venv, "bin", "supervisord"), "-c", conf],
                     os.path.join(d, "stderr.log"), stdout=subprocess.DEVNULL)

    def rpc():
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))

    try:
        wait_for(lambda: p.poll() is not None or os.path.exists(sock), 30, "supervisord")
        if p.poll() is not None:
            raise RuntimeError(f"supervisord exited with {p.returncode}; see its log")
        return measure(
            p.pid,
            lambda: rpc().supervisor.stopProcess("one", True),
            lambda: rpc().supervisor.startProcessGroup("hundred", False),
            a.kills, a.idle)
    finally:
        stop_daemon(p, lambda: rpc().supervisor.shutdown())


# ---- report -----------------------------------------------------------------


def fmt(name, r):
    if isinstance(r, str):
        return [f"failed: {r}"] * 4
    lat = sorted(r["respawn"])
    return [
        f"{statistics.median(lat) * 1e3:.2f} ms",
        f"{r['start'] * 1e3:.1f} ms",
        f"{r['rss_kib'] / 1024:.1f} MiB ({r['procs']} proc)",
        f"{r['cpu_pct']:.3f} % ({r['ticks']} tick{'' if r['ticks'] == 1 else 's'})",
    ]


def ratios(r, base):
    if isinstance(r, str) or isinstance(base, str):
        return ["—"] * 4
    out = []
    pairs = [
        (statistics.median(r["respawn"]), statistics.median(base["respawn"])),
        (r["start"], base["start"]),
        (r["rss_kib"], base["rss_kib"]),
        (r["ticks"], base["ticks"]),
    ]
    for i, (x, y) in enumerate(pairs):
        if y > 0:
            out.append(f"{x / y:.1f}×")
        elif i == 3:
            out.append(f"∞ ({x} vs 0 ticks)" if x else "— (0 vs 0)")
        else:
            out.append("—")
    return out


def main():
    global PIDFILE
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--circuit", required=True)
    ap.add_argument("--venv", default="")
    ap.add_argument("--systems", default="circuit,circus,supervisord")
    ap.add_argument("--versions", default="")  # "circus=0.19.0,supervisor=4.3.0"
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--idle", type=float, default=20)
    ap.add_argument("--cleanup", action="store_true", help="kill what --tmp's pid list names")
    a = ap.parse_args()
    PIDFILE = os.path.join(a.tmp, "pids")
    if a.cleanup:
        if os.path.exists(PIDFILE):
            for line in open(PIDFILE):
                pid, started = map(int, line.split())
                kill_tree(pid, started)
        return

    # Our own process group gets SIGINT/SIGTERM from the shell's trap: unwind
    # through the finally blocks, which stop the daemons.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ver = dict(kv.split("=", 1) for kv in a.versions.split(",") if "=" in kv)
    runners = {"circuit": run_circuit, "circus": run_circus, "supervisord": run_supervisord}
    res = {}
    for name in ("circuit", "circus", "supervisord"):
        if name not in a.systems.split(","):
            res[name] = "not installed"
            continue
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        try:
            res[name] = runners[name](a)
            r = res[name]
            lat = sorted(r["respawn"])
            print(f"  respawn ms: median {statistics.median(lat) * 1e3:.2f}, "
                  f"min {lat[0] * 1e3:.2f}, max {lat[-1] * 1e3:.2f} (n={len(lat)}); "
                  f"start {r['start'] * 1e3:.1f} ms; RSS {r['rss_kib']} KiB over "
                  f"{r['procs']} process(es) {r['names']}; {r['ticks']} ticks in {r['idle']:.1f} s; "
                  f"{r['children']} children", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            res[name] = f"{type(e).__name__}: {e}"
            print(f"  {name} failed: {res[name]}", file=sys.stderr, flush=True)

    cols = [
        ("circuit", "circuit"),
        (f"Circus {ver.get('circus', '')}".strip(), "circus"),
        (f"supervisord {ver.get('supervisor', '')}".strip(), "supervisord"),
    ]
    rows = [
        f"respawn after kill -9, median of {a.kills}",
        "start of 100 processes, all running",
        "daemon RSS, 100 processes running",
        f"daemon idle CPU, 100 processes, {a.idle:g} s",
    ]
    cells = {key: fmt(key, res[key]) for _, key in cols}
    rc = ratios(res["circus"], res["circuit"])
    rs = ratios(res["supervisord"], res["circuit"])
    print("| figure | " + " | ".join(c for c, _ in cols) + " | Circus / circuit | supervisord / circuit |")
    print("|---|---|---|---|---|---|")
    for i, row in enumerate(rows):
        print(f"| {row} | " + " | ".join(cells[k][i] for _, k in cols) + f" | {rc[i]} | {rs[i]} |")


if __name__ == "__main__":
    main()
