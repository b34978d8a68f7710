#!/usr/bin/env python3
"""bench/run.py - the benchmark driver: our CSE against the reference CSE (ACME, `acmecse`).

Invoked by `bench/run.sh` (see there and BENCHMARKS.md). Modes:
  full   (default) 10 s per load run, both systems, writes BENCHMARKS.md, bench/results/*.json, PNG
  --quick          2 s per load run, both systems, same outputs (for development)
  --smoke          our side only, debug binaries, about 10 s; exits 1 when a scenario errors

Everything runs on 127.0.0.1 on free ports; every process this driver starts is stopped by its
PID at the end (also on errors and Ctrl-C). Standard library only; matplotlib (for the plot) is
imported from the throw-away venv of the reference CSE when available.
"""

import argparse
import datetime
import glob
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
ACMECSE_VERSION = os.environ.get("BENCH_ACMECSE_VERSION", "2026.5.3")
SP_ID = "acme.example.com"
BODY_CIN = '{"m2m:cin":{"con":"x"}}'
MIB = 1024 * 1024


# ------------------------------------------------------------------------------------------
# Processes: everything started here is remembered and stopped by PID
# ------------------------------------------------------------------------------------------

class Procs:
    def __init__(self):
        self.procs = []

    def spawn(self, cmd, cwd, log, env=None):
        out = open(log, "ab")
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, wait=10.0):
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, sig)
            proc.wait(timeout=wait)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

    def kill(self, proc):
        self.stop(proc, signal.SIGKILL, 5)

    def stop_all(self):
        for proc in reversed(self.procs):
            try:
                self.kill(proc)
            except Exception:
                pass


PROCS = Procs()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def log(msg):
    print(f"bench: {msg}", flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------------------------------------
# HTTP (oneM2M over HTTP) helpers
# ------------------------------------------------------------------------------------------

_RI = [0]


def request(port, method, path, origin="CAdmin", body=None, ty=None, timeout=5.0):
    """-> (HTTP status, headers dict (lower-case), parsed JSON or None); status 0 = no answer."""
    _RI[0] += 1
    headers = {"X-M2M-Origin": origin, "X-M2M-RI": f"drv-{_RI[0]}", "X-M2M-RVI": "4",
               "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = f"application/json;ty={ty}" if ty else "application/json"
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
    except (OSError, http.client.HTTPException):
        return 0, {}, None
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def settled(read, limit=30.0):
    """`read()` once two readings 300 ms apart agree (writes still in flight when a load
    generator stops are committed after it returns); the last reading after `limit` s."""
    value, deadline = read(), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again = read()
        if again == value:
            return value
        value = again
    return value


def flushed(port):
    """Once the writes a load generator left in flight are committed: a CREATE sent now is
    answered after them (our CSE commits its writes in the order they reach its writer), so
    readings that follow its answer see them. Best effort on any system: a failure is ignored."""
    request(port, "POST", "/cse-in", ty=3, body={"m2m:cnt": {"rn": "benchFlush"}}, timeout=60)
    request(port, "POST", "/cse-in/benchFlush", ty=4, body={"m2m:cin": {"con": "flush"}}, timeout=60)


def discovered(port, path):
    """How many resources a discovery finds, following partial answers (X-M2M-CTS: 1 with the
    next offset in X-M2M-CTO, as our CSE pages large results); None when it fails."""
    found, offset = 0, None
    while True:
        page = path if offset is None else f"{path}&ofst={offset}"
        st, headers, body = request(port, "GET", page, timeout=120)
        if st != 200:
            return None
        found += len((body or {}).get("m2m:uril", []))
        if headers.get("x-m2m-cts") != "1" or not headers.get("x-m2m-cto", "").isdigit():
            return found
        offset = headers["x-m2m-cto"]


def wait_status(port, path, want, bound, every=0.005, proc=None):
    """Poll GET path until it answers `want`; -> monotonic time of that answer (None on time-out)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        status, _, _ = request(port, "GET", path, timeout=2.0)
        if status == want:
            return time.monotonic()
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(every)
    return None


def rss_mib(proc):
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------------
# The two systems
# ------------------------------------------------------------------------------------------

NODES = {  # kind -> (CSE-ID without slash, CSEBase rn, registrar kind)
    "IN": ("id-in", "cse-in", None),
    "MN": ("id-mn", "cse-mn", "IN"),
    "ASN": ("id-asn", "cse-asn", "MN"),
}


class PgServer:
    """A throw-away PostgreSQL server on 127.0.0.1 from the distribution's server binaries
    (run as the `postgres` user when the driver runs as root: the server refuses root), with
    its default durability (fsync and synchronous commit on). Every CSE start gets a database
    of its own (`new_database`), so a restart "empty" is a new database, as with SQLite."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                      key=lambda b: int(b.split("/")[4]) if b.split("/")[4].isdigit() else 0)
        if not bins:
            raise BenchError("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
        self.bin = os.path.dirname(bins[-1])
        self.version = subprocess.run([bins[-1], "--version"], capture_output=True, text=True).stdout.strip()
        self.dir = tempfile.mkdtemp(prefix="bench-pg.")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            subprocess.run(["chown", "postgres:", self.dir], check=True)
        self.data = os.path.join(self.dir, "data")
        self.port = free_ports(1)[0]
        self.count = 0
        out = subprocess.run(self.as_server_user("initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                                                 "-E", "UTF8"), capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError(f"initdb failed: {out.stderr.strip()}")
        self.proc = PROCS.spawn(self.as_server_user("postgres", "-D", self.data, "-p", str(self.port), "-k", self.dir,
                                                    "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"),
                                self.dir, os.path.join(self.dir, "server.log"))
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError(f"postgres did not start (see {self.dir}/server.log)")
                time.sleep(0.05)
        log(f"{self.version} on 127.0.0.1:{self.port} ({self.dir})")

    def as_server_user(self, program, *args):
        cmd = [os.path.join(self.bin, program), *args]
        if os.geteuid() == 0:
            return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]
        return cmd

    def new_database(self, tag):
        self.count += 1
        name = f"bench_{re.sub(r'[^a-z0-9]', '_', tag.lower())}_{self.count}"
        out = subprocess.run(self.as_server_user("createdb", "-h", HOST, "-p", str(self.port), "-U", "postgres", name),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError(f"createdb {name} failed: {out.stderr.strip()}")
        return name

    def url(self, name):
        return f"postgresql://postgres@{HOST}:{self.port}/{name}"

    def stop(self):
        PROCS.stop(self.proc, signal.SIGINT, 30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Ours:
    name = "ours"

    def __init__(self, work, binary, init_dir):
        self.work, self.binary, self.init_dir = work, binary, init_dir
        self.ports, self.procs, self.db = {}, {}, {}
        self.restarts = 0
        # When set (a PgServer), every IN keeps its data on PostgreSQL, a new database per start.
        self.pg = None

    def config(self, kind, port, ports, durable, check_interval, allowed, tag=None, database_url=None,
               level="warn"):
        csi, rn, registrar = NODES[kind]
        lines = ["[cse]", f'type = "{kind}"', f'cse_id = "/{csi}"', f'resource_name = "{rn}"',
                 f'sp_id = "{SP_ID}"', 'admin_originator = "CAdmin"', "",
                 "[cse.registration]", f'check_interval = "{check_interval}"',
                 "allowed_csr_originators = [" + ", ".join(f'"{a}"' for a in allowed) + "]", ""]
        if registrar:
            rcsi, rrn, _ = NODES[registrar]
            lines += ["[cse.registrar]", f'address = ["http://{HOST}:{ports[registrar]}"]',
                      f'cse_id = "/{rcsi}"', f'resource_name = "{rrn}"', ""]
        lines += ["[admin]", 'listen = ""', "", "[http]", f'listen = "{HOST}:{port}"', "", "[database]"]
        if database_url is None and self.pg is not None and kind == "IN":
            database_url = self.pg.url(self.pg.new_database(f"ours-{tag or kind}"))
        if database_url is not None:
            self.db[kind] = database_url
            lines += [f'url = "{database_url}"']
        elif durable:
            self.restarts += 1
            path = os.path.join(self.work, f"ours-{kind.lower()}-{self.restarts}.db")
            self.db[kind] = path
            lines += ["in_memory = false", f'path = "{path}"', 'durability = "full"']
        else:
            lines += ["in_memory = true"]
        lines += ["", "[logging]", f'level = "{level}"', ""]
        return "\n".join(lines)

    def start(self, kind, port, ports, durable=False, check_interval="5s", allowed=(), tag=None,
              database_url=None, level="warn"):
        tag = tag or kind.lower()
        path = os.path.join(self.work, f"ours-{tag}.toml")
        with open(path, "w") as f:
            f.write(self.config(kind, port, ports, durable, check_interval, allowed, tag, database_url, level))
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        started = time.monotonic()
        proc = PROCS.spawn([self.binary, "--config", path, "--init-dir", self.init_dir], self.work,
                           os.path.join(self.work, f"ours-{tag}.log"), env)
        return proc, started

    def wait_up(self, kind, port, proc, bound=30):
        _, rn, _ = NODES[kind]
        if wait_status(port, f"/{rn}", 200, bound, proc=proc) is None:
            raise BenchError(f"our {kind} did not answer on port {port} (see {self.work}/ours-{kind.lower()}.log)")


class Reference:
    name = "reference"

    def __init__(self, work, python):
        self.work, self.python = work, python
        # When set (a PgServer), every IN keeps its data on PostgreSQL, a new database per start.
        self.pg = None

    def db_type(self, kind):
        return "postgresql" if self.pg is not None and kind == "IN" else "memory"

    def ini(self, kind, port, ports, check_interval, tag=None):
        csi, rn, registrar = NODES[kind]
        lines = ["[basic.config]", f"cseType={kind}", f"cseID={csi}", f"cseName={rn}", "adminID=CAdmin",
                 f"serviceProviderID=//{SP_ID}", f"cseHost={HOST}", f"httpPort={port}",
                 f"networkInterface={HOST}", f"databaseType={self.db_type(kind)}", "logLevel=warn",
                 "consoleTheme=dark", "consoleType=simple"]
        if registrar:
            rcsi, rrn, _ = NODES[registrar]
            lines += [f"registrarCseHost={HOST}", f"registrarCsePort={ports[registrar]}",
                      f"registrarCseID={rcsi}", f"registrarCseName={rrn}"]
        lines += ["", "[cse.registration]", "allowedCSROriginators=/id-in,/id-mn*,/id-asn*",
                  f"checkInterval={check_interval}", "",
                  "[logging]", "enableFileLogging=false", "enableScreenLogging=false", "",
                  "[console]", "headless=true", "", "[textui]", "startWithTUI=false", ""]
        if self.db_type(kind) == "postgresql":
            name = self.pg.new_database(f"ref-{tag or kind}")
            lines += ["[database]", "type=postgresql", "", "[database.postgresql]", f"host={HOST}",
                      f"port={self.pg.port}", "role=postgres", "password=unused", f"database={name}",
                      "schema=acmecse", ""]
        return "\n".join(lines)

    def start(self, kind, port, ports, check_interval=5, tag=None):
        tag = tag or kind.lower()
        d = os.path.join(self.work, f"ref-{tag}")
        os.makedirs(os.path.join(d, "data"), exist_ok=True)
        with open(os.path.join(d, "acme.ini"), "w") as f:
            f.write(self.ini(kind, port, ports, check_interval, tag))
        log_path = os.path.join(d, "stdout.log")
        if os.path.exists(log_path):
            os.remove(log_path)
        started = time.monotonic()
        proc = PROCS.spawn([self.python, "-m", "acmecse", "--base-directory", d, "--config", "acme.ini",
                            "--headless", "--http-port", str(port), "--network-interface", HOST,
                            "--db-type", self.db_type(kind), "--log-level", "warn"], d, log_path)
        proc.log_path = log_path
        return proc, started

    def wait_up(self, kind, port, proc, bound=60):
        # ACME must not get a request before it printed "CSE started" (a request during its route
        # set-up aborts the start): wait for that line first, then for its CSEBase.
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            try:
                with open(proc.log_path, errors="replace") as f:
                    if "CSE started" in f.read():
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise BenchError(f"reference {kind} exited (see {proc.log_path})")
            time.sleep(0.01)
        _, rn, _ = NODES[kind]
        if wait_status(port, f"/{rn}", 200, max(1, deadline - time.monotonic()), proc=proc) is None:
            raise BenchError(f"reference {kind} did not answer on port {port} (see {proc.log_path})")


# ------------------------------------------------------------------------------------------
# Load generation: wrk with Lua scripts
# ------------------------------------------------------------------------------------------

def lua_script(work, name, method="GET", body=None, ty=None, stop_after=None):
    """A wrk script sending one request; `stop_after`: stop after that many answers (wrk -t1)."""
    path = os.path.join(work, f"{name}.lua")
    lines = [f'wrk.method = "{method}"',
             'wrk.headers["X-M2M-Origin"] = "CAdmin"',
             'wrk.headers["X-M2M-RI"] = "bench"',
             'wrk.headers["X-M2M-RVI"] = "4"',
             'wrk.headers["Accept"] = "application/json"']
    if body is not None:
        lines += [f'wrk.headers["Content-Type"] = "application/json;ty={ty}"',
                  "wrk.body = '" + body + "'"]
    if stop_after is not None:
        lines += ["local answers = 0",
                  "response = function(status, headers, body)",
                  "  answers = answers + 1",
                  f"  if answers >= {stop_after} then wrk.thread:stop() end",
                  "end"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(out):
    r = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "non2xx": 0, "socket_errors": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M):
            r[key] = to_ms(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        r["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        r["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        r["socket_errors"] = sum(int(x) for x in m.groups())
    r["errors"] = r["non2xx"] + r["socket_errors"]
    return r


def wrk(url, conns, duration, script=None):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "--latency"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    r = parse_wrk(out)
    r["command"] = " ".join(cmd)
    if r["rps"] is None:
        r["errors"] = max(1, r["errors"])
        r["raw"] = out[-500:]
    return r


def wrk_until(url, conns, script, done, bound=600):
    """wrk until `done()` holds (polled every 50 ms; the script stops sending by itself), then
    SIGINT, on which wrk prints its statistics at once instead of sleeping out its -d."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{bound}s", "--timeout", "5s", "--latency", "-s", script, url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + bound
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if done():
            break
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    r = parse_wrk(out)
    r["command"] = " ".join(cmd)
    if r["rps"] is None:
        r["errors"] = max(1, r["errors"])
        r["raw"] = out[-500:]
    return r


def fmt_run(r):
    if r is None:
        return "not run"
    return (f"{r['rps']:.0f} req/s, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
            f"{r['errors']} errors" if r.get("rps") is not None else f"failed: {r.get('raw', '')}")


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        self.duration = {"full": 10, "quick": 2, "smoke": 1}[self.mode]
        self.with_ref = self.mode != "smoke"
        self.registrees = 100 if self.mode == "smoke" else 1000
        self.gone = 10 if self.mode == "smoke" else 100
        self.profile = "debug" if self.mode == "smoke" else "release"
        self.work = tempfile.mkdtemp(prefix="bench.", dir=os.path.join(ROOT, "target"))
        self.results = {"mode": self.mode, "load_seconds": self.duration, "scenarios": {}}
        self.failures = []
        self.phase = ""  # prefixed to every check (the PostgreSQL pass)
        self.anomalies = []
        self.python = None
        self.t_start = time.monotonic()

    # ---- set-up --------------------------------------------------------------------------

    def setup(self):
        if shutil.which("wrk") is None:
            log("installing wrk (apt-get)")
            sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
            subprocess.run(sudo + ["apt-get", "update", "-qq"], check=False)
            subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            if shutil.which("wrk") is None:
                raise BenchError("wrk is not installed and apt-get install wrk failed")
        cargo = ["cargo", "build", "--quiet", "--bin", "acme-cse", "--example", "bench_hello",
                 "--example", "bench_commit", "--example", "registree_sim"]
        if self.profile == "release":
            cargo.insert(2, "--release")
        if not self.args.no_build:
            log(" ".join(cargo))
            subprocess.run(cargo, cwd=ROOT, check=True)
        tdir = os.path.join(ROOT, "target", self.profile)
        self.binary = os.path.join(tdir, "acme-cse")
        self.hello = os.path.join(tdir, "examples", "bench_hello")
        self.commit = os.path.join(tdir, "examples", "bench_commit")
        self.sim = os.path.join(tdir, "examples", "registree_sim")
        for b in (self.binary, self.hello, self.commit, self.sim):
            if not os.access(b, os.X_OK):
                raise BenchError(f"missing binary {b}")
        self.build_cmd = " ".join(cargo)
        if self.with_ref:
            self.python = self.venv()
        self.ours = Ours(self.work, self.binary, os.path.join(ROOT, "init"))
        self.ref = Reference(self.work, self.python) if self.with_ref else None
        self.results["meta"] = self.meta()

    def venv(self):
        venv = os.environ.get("BENCH_VENV") or os.path.join(self.work, "venv")
        py = os.path.join(venv, "bin", "python")
        if not os.access(py, os.X_OK):
            log(f"creating the throw-away venv {venv}")
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        have = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('acmecse'))"],
                              capture_output=True, text=True).stdout.strip()
        if have != ACMECSE_VERSION:
            log(f"pip install acmecse=={ACMECSE_VERSION}")
            subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"acmecse=={ACMECSE_VERSION}"], check=True)
        if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode != 0:
            log("pip install matplotlib (for the plot; optional)")
            if subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "matplotlib"],
                              capture_output=True).returncode != 0:
                log("matplotlib could not be installed: no plot")
        return py

    def meta(self):
        def cmd(c):
            try:
                return subprocess.run(c, capture_output=True, text=True, timeout=20).stdout.strip()
            except Exception:
                return "?"
        lscpu = cmd(["lscpu"])
        model = re.search(r"Model name:\s+(.*)", lscpu)
        mem = cmd(["free", "-m"])
        total = re.search(r"Mem:\s+(\d+)", mem)
        meta = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": model.group(1).strip() if model else "?",
            "nproc": os.cpu_count(),
            "memory_mib": int(total.group(1)) if total else None,
            "kernel": platform.release(),
            "rustc": cmd(["rustc", "--version"]),
            "wrk": " ".join(cmd(["wrk", "--version"]).split()[:2]) or "?",
            "python": cmd([self.python or sys.executable, "--version"]),
            "acmecse": ACMECSE_VERSION if self.with_ref else "not run",
            "git": cmd(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
            "build": self.build_cmd,
            "loadavg_at_start": " ".join(open("/proc/loadavg").read().split()[:3]),
        }
        if self.python:
            meta["acmecse"] = cmd([self.python, "-c", "import importlib.metadata as m; print(m.version('acmecse'))"])
        return meta

    def check(self, ok, what):
        """A failed check of ours (or of the harness) fails the run; one of the reference is a
        finding about the reference, reported in BENCHMARKS.md, and does not."""
        if not ok:
            what = self.phase + what
            if "reference" in what:
                self.anomalies.append(what)
                log(f"REFERENCE ANOMALY: {what}")
            else:
                self.failures.append(what)
                log(f"CHECK FAILED: {what}")

    # ---- pairs (IN + MN + ASN) and scenario 5 -------------------------------------------

    def start_tree(self, system):
        """Start IN, then MN (scenario 5a: MN start -> CSR on the IN), then ASN."""
        ports = dict(zip(("IN", "MN", "ASN"), free_ports(3)))
        tree = {"ports": ports, "procs": {}, "system": system}
        if system == "ours":
            s = self.ours
            proc, _ = s.start("IN", ports["IN"], ports, durable=True, check_interval="5s", allowed=["/id-mn*"])
            s.wait_up("IN", ports["IN"], proc)
            tree["procs"]["IN"] = proc
            proc, t0 = s.start("MN", ports["MN"], ports, check_interval="200ms", allowed=["/id-asn*"])
        else:
            s = self.ref
            proc, _ = s.start("IN", ports["IN"], ports, check_interval=5)
            s.wait_up("IN", ports["IN"], proc)
            tree["procs"]["IN"] = proc
            proc, t0 = s.start("MN", ports["MN"], ports, check_interval=1)
        tree["procs"]["MN"] = proc
        t1 = wait_status(ports["IN"], "/cse-in/id-mn", 200, 60, every=0.005, proc=proc)
        self.check(t1 is not None, f"{system}: MN did not register to the IN")
        reg = (t1 - t0) * 1e3 if t1 else None
        s.wait_up("MN", ports["MN"], proc)
        if system == "ours":
            proc, _ = s.start("ASN", ports["ASN"], ports, check_interval="200ms")
        else:
            proc, _ = s.start("ASN", ports["ASN"], ports, check_interval=1)
        tree["procs"]["ASN"] = proc
        s.wait_up("ASN", ports["ASN"], proc)
        ok = wait_status(ports["MN"], "/cse-mn/id-asn", 200, 60, every=0.02)
        self.check(ok is not None, f"{system}: ASN did not register to the MN")
        log(f"{system}: IN :{ports['IN']}  MN :{ports['MN']}  ASN :{ports['ASN']}; "
            f"MN start -> CSR on the IN {reg and round(reg, 1)} ms")
        return tree, reg

    def reregister(self, tree):
        """Scenario 5b: kill the IN, restart it empty on the same port; time from its CSEBase
        answering to the MN's CSR existing again."""
        system, ports = tree["system"], tree["ports"]
        PROCS.kill(tree["procs"]["IN"])
        time.sleep(0.5)
        if system == "ours":
            proc, _ = self.ours.start("IN", ports["IN"], ports, durable=True, check_interval="5s",
                                      allowed=["/id-mn*"], tag="in-restarted")
            t_up = wait_status(ports["IN"], "/cse-in", 200, 30, every=0.005, proc=proc)
        else:
            proc, _ = self.ref.start("IN", ports["IN"], ports, check_interval=5, tag="in-restarted")
            self.ref.wait_up("IN", ports["IN"], proc)
            t_up = time.monotonic()
        tree["procs"]["IN"] = proc
        if t_up is None:
            self.check(False, f"{system}: restarted IN did not answer")
            return None
        t1 = wait_status(ports["IN"], "/cse-in/id-mn", 200, 60, every=0.005)
        self.check(t1 is not None, f"{system}: MN did not re-register after the IN restart")
        return (t1 - t_up) * 1e3 if t1 else None

    def populate(self, tree):
        """An ACP granting everything to all, a container `benchCnt` under it (the forwarded
        RETRIEVE target) and two containers for the CIN CREATE runs, on the IN."""
        port = tree["ports"]["IN"]
        status, _, body = request(port, "POST", "/cse-in", body={"m2m:acp": {
            "rn": "acpBench", "pv": {"acr": [{"acor": ["all"], "acop": 63}]},
            "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}}, ty=1)
        if status != 201:
            raise BenchError(f"{tree['system']}: cannot create the ACP: {status} {body}")
        acp_ri = body["m2m:acp"]["ri"]
        for rn in ("benchCnt", "cin1", "cin32"):
            cnt = {"rn": rn, "mni": 100000000, "mbs": 10000000000}
            if rn == "benchCnt":
                cnt["acpi"] = [acp_ri]
            status, _, body = request(port, "POST", "/cse-in", body={"m2m:cnt": cnt}, ty=3)
            if status != 201:
                raise BenchError(f"{tree['system']}: cannot create container {rn}: {status} {body}")
        # the forwarded targets answer before the load starts
        tree["unsupported"] = {}
        for kind, key in (("MN", "s3_retrieve_1hop"), ("ASN", "s3_retrieve_2hop")):
            # Right after the IN's restart an MN may have made its CSR there and not yet
            # finished its registration (its own copy of the IN's CSR): a few rounds' time.
            deadline = time.monotonic() + 10
            while True:
                status, headers, body = request(tree["ports"][kind], "GET", "/~/id-in/cse-in/benchCnt")
                if status == 200 or tree["system"] == "reference" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if status != 200 and tree["system"] == "reference":
                # not a failure of the benchmark: the reference cannot do it; reported as such
                why = f"answers HTTP {status}, RSC {headers.get('x-m2m-rsc')}: {(body or {}).get('m2m:dbg', body)}"
                tree["unsupported"][key] = why
                log(f"reference: forwarded RETRIEVE via {kind} not supported ({why}); not measured")
                continue
            self.check(status == 200, f"{tree['system']}: forwarded RETRIEVE via {kind}: {status} {body}")

    # ---- load scenarios ------------------------------------------------------------------

    def load(self, trees, key, label, kind, path, conc, method="GET", body=None, ty=None):
        """Run the same load against each system, interleaved (ours, then the reference)."""
        out = self.sc.setdefault(key, {"label": label, "runs": {}})
        for c in conc:
            for tree in trees:
                system = tree["system"]
                if key in tree.get("unsupported", {}):
                    out.setdefault("unsupported", {})[system] = tree["unsupported"][key]
                    continue
                if callable(path):
                    p = path(c)
                else:
                    p = path
                script = lua_script(self.work, f"{key}-{c}", method, body, ty)
                url = f"http://{HOST}:{tree['ports'][kind]}{p}"
                r = wrk(url, c, self.duration, script)
                r["url_path"] = p
                out["runs"].setdefault(system, {})[str(c)] = r
                log(f"{label} c={c} {system}: {fmt_run(r)}")
                self.check(r["errors"] == 0, f"{label} c={c} {system}: {r['errors']} errors")

    def cin_check(self, trees):
        runs = self.sc["s2_cin_create"]["runs"]
        for tree in trees:
            system = tree["system"]
            for c in ("1", "32"):
                r = runs[system][c]
                rn = f"cin{c}"
                def counts(port=tree["ports"]["IN"], rn=rn):
                    st, _, body = request(port, "GET", f"/cse-in/{rn}", timeout=30)
                    return ((body or {}).get("m2m:cnt", {}).get("cni") if st == 200 else None,
                            discovered(port, f"/cse-in/{rn}?fu=1&ty=4"))
                flushed(tree["ports"]["IN"])
                cni, stored = settled(counts)
                ok_2xx = r["requests"] - r["non2xx"]
                ok = cni is not None and cni == stored and ok_2xx <= cni <= ok_2xx + int(c)
                r["cni"], r["stored"], r["cni_ok"] = cni, stored, ok
                log(f"CIN c={c} {system}: cni={cni}, stored (discovery) {stored}, 2xx answers counted by wrk {ok_2xx}")
                self.check(ok, f"{system}: cni {cni} != stored {stored} (or outside [{ok_2xx}, {ok_2xx + int(c)}])")

    # ---- scenario 13: the disk's commit ceiling -------------------------------------------

    def commit_ceiling(self):
        """Raw fsync'd single-row commits per second (`examples/bench_commit.rs`: SQLite, WAL,
        `synchronous = FULL`, one row per transaction) into a file in the work directory, where
        our IN's database is, for one load run's length: the bound of a durable CIN CREATE at c=1."""
        db = os.path.join(self.work, "commit-ceiling.db")
        cmd = [self.commit, db, str(self.duration)]
        out = subprocess.run(cmd, cwd=self.work, capture_output=True, text=True, timeout=self.duration + 60)
        m = re.search(r"^commits/s ([\d.]+)$", out.stdout, re.M)
        rate = float(m.group(1)) if m else None
        self.check(out.returncode == 0 and rate is not None,
                   f"bench_commit failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-300:]}")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        log(f"commit ceiling (bench_commit, SQLite WAL, synchronous = FULL, one row per commit, in {self.work}): "
            f"{f(rate, 1)} commits/s over {self.duration} s")
        return {"commits_per_s": rate, "seconds": self.duration,
                "command": f"target/{self.profile}/examples/bench_commit <work dir>/commit-ceiling.db {self.duration}"}

    # ---- scenario 6: liveliness at scale --------------------------------------------------

    def sim_get(self, port, path, timeout=10):
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        conn.request("GET", path)
        text = conn.getresponse().read().decode()
        conn.close()
        return text

    def sim_probes(self, port):
        rows = []
        for line in self.sim_get(port, "/_sim/probes").splitlines():
            i, at, gone = line.split()
            rows.append((int(i), int(at) / 1e6, gone == "1"))
        return rows

    @staticmethod
    def rounds(rows, n):
        """Split probe arrivals into rounds: a round ends when a registree is probed again."""
        out, seen, first, last = [], set(), None, None
        for i, at, _ in rows:
            if i in seen:
                out.append((first, last, len(seen)))
                seen, first = set(), None
            seen.add(i)
            first = at if first is None else first
            last = at
        if seen:
            out.append((first, last, len(seen)))
        return [(f, l, k) for f, l, k in out if k == n]

    def liveliness(self, system):
        n, gone = self.registrees, self.gone
        sim_port, in_port = free_ports(2)
        sim = PROCS.spawn([self.sim, str(sim_port)], self.work, os.path.join(self.work, f"sim-{system}.log"))
        if wait_status(sim_port, "/_sim/now", 200, 10, every=0.01) is None:
            raise BenchError("the registree simulator did not start")
        interval = 1 if self.mode == "smoke" else 5
        ports = {"IN": in_port}
        if system == "ours":
            proc, _ = self.ours.start("IN", in_port, ports, check_interval=f"{interval}s", allowed=["/id-mn*"],
                                      tag="in-liveliness")
            self.ours.wait_up("IN", in_port, proc)
        else:
            proc, _ = self.ref.start("IN", in_port, ports, check_interval=interval, tag="in-liveliness")
            self.ref.wait_up("IN", in_port, proc)
        res = {"registrees": n, "gone": gone, "check_interval_s": interval}
        # register n CSRs, 8 at a time
        t0 = time.monotonic()
        errors = []

        def register(lo, hi):
            for i in range(lo, hi):
                st, _, body = request(in_port, "POST", "/cse-in", origin=f"/id-mn{i}", ty=16, timeout=30, body={
                    "m2m:csr": {"rn": f"id-mn{i}", "csi": f"/id-mn{i}", "cb": f"/id-mn{i}/cse-mn{i}",
                                "poa": [f"http://{HOST}:{sim_port}"], "rr": True, "srv": ["3", "4", "5"]}})
                if st != 201:
                    errors.append((i, st, body))
        step = (n + 7) // 8
        threads = [threading.Thread(target=register, args=(k, min(n, k + step))) for k in range(0, n, step)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        res["register_s"] = time.monotonic() - t0
        self.check(not errors, f"{system}: {len(errors)} CSR registrations failed, first {errors[:1]}")

        def count():
            st, _, body = request(in_port, "GET", "/cse-in?fu=1&ty=16", timeout=30)
            return len((body or {}).get("m2m:uril", [])) if st == 200 else None
        res["csrs"] = count()
        log(f"liveliness {system}: {res['csrs']} CSRs registered in {res['register_s']:.1f} s")
        # observe full sweeps (from the simulator's side)
        self.sim_get(sim_port, "/_sim/reset")
        bound = 3 * interval + (60 if system == "reference" else 10)
        deadline = time.monotonic() + bound
        sweeps = []
        while time.monotonic() < deadline:
            time.sleep(0.5)
            sweeps = self.rounds(self.sim_probes(sim_port), n)
            if len(sweeps) >= 2:
                break
        if sweeps:
            durs = [(l - f) for f, l, _ in sweeps]
            res["sweep_ms"] = statistics.median(durs)
            res["sweeps_observed"] = len(durs)
        else:
            rows = self.sim_probes(sim_port)
            res["sweep_ms"] = None
            res["sweep_lower_bound_s"] = bound
            res["probes_seen"] = len(rows)
            self.check(system == "reference", f"{system}: no complete liveliness sweep within {bound} s")
        log(f"liveliness {system}: sweep over {n} registrees {res.get('sweep_ms')} ms")
        # drop `gone` registrees, time until the IN has removed their CSRs
        self.sim_get(sim_port, f"/_sim/drop?from=0&to={gone - 1}")
        t_drop = time.monotonic()
        bound = 3 * interval + 2 * 3 + (120 if system == "reference" else 10)
        deadline = t_drop + bound
        detected = None
        while time.monotonic() < deadline:
            c = count()
            if c is not None and c <= n - gone:
                detected = time.monotonic() - t_drop
                break
            time.sleep(0.05)
        res["detect_gone_s"] = detected
        if detected is None:
            res["detect_gone_lower_bound_s"] = bound
        res["csrs_after"] = count()
        self.check(detected is not None or system == "reference",
                   f"{system}: {gone} gone registrees not removed within {bound} s")
        log(f"liveliness {system}: {gone} gone detected after {detected} s ({res['csrs_after']} CSRs left)")
        PROCS.kill(proc)
        PROCS.kill(sim)
        return res

    # ---- scenario 8: notifications ---------------------------------------------------------

    def notes(self, port, want=None, ms=10000):
        """(count, first, last) of the notifications the simulator received (arrival times in
        ns since the epoch); with `want`: once `want` arrived, or after `ms` milliseconds."""
        path = f"/_sim/wait?n={want}&ms={ms}" if want else "/_sim/notes"
        count, first, last, distinct = (int(x) for x in self.sim_get(port, path, timeout=ms / 1000 + 10).split())
        return count, first, last, distinct

    def notifications(self, system):
        """CIN CREATE -> notification received (c=1), notifications/s at c=32 with 1 and with
        100 subscribers on one container, RSS of the IN with pending notifications for a dead
        target. A fresh IN per system (ours: the durable configuration of the tree's IN); the
        registree simulator is the receiver (`/notify/<k>`, answered 2000 at once)."""
        sizes = {"smoke": (20, 200, 5, 200), "quick": (100, 1000, 20, 2000), "full": (500, 3000, 100, 10000)}
        n_lat, n_one, n_hundred, n_pending = sizes[self.mode]
        sim_port, in_port = free_ports(2)
        sim = PROCS.spawn([self.sim, str(sim_port)], self.work, os.path.join(self.work, f"sink-{system}.log"))
        if wait_status(sim_port, "/_sim/now", 200, 10, every=0.01) is None:
            raise BenchError("the notification receiver (registree simulator) did not start")
        ports = {"IN": in_port}
        if system == "ours":
            proc, _ = self.ours.start("IN", in_port, ports, durable=True, allowed=["/id-mn*"], tag="in-notify")
            self.ours.wait_up("IN", in_port, proc)
        else:
            proc, _ = self.ref.start("IN", in_port, ports, tag="in-notify")
            self.ref.wait_up("IN", in_port, proc)
        # the reference sends notifications on a pool of its own; give bounds it can meet
        slack = 10 if system == "ours" else 30

        def container(rn, subscribers):
            st, _, body = request(in_port, "POST", "/cse-in", ty=3,
                                  body={"m2m:cnt": {"rn": rn, "mni": 100000000, "mbs": 10000000000}})
            if st != 201:
                raise BenchError(f"{system}: cannot create container {rn}: {st} {body}")
            for k in range(subscribers):
                st, _, body = request(in_port, "POST", f"/cse-in/{rn}", ty=23, timeout=30, body={"m2m:sub": {
                    "rn": f"sub{k}", "nu": [f"http://{HOST}:{sim_port}/notify/{rn}/{k}"],
                    "enc": {"net": [3], "chty": [4]}, "nct": 1}})
                if st != 201:
                    raise BenchError(f"{system}: cannot subscribe to {rn}: {st} {body}")
            self.sim_get(sim_port, "/_sim/reset")  # forget the verification requests

        def cni(rn):
            st, _, body = request(in_port, "GET", f"/cse-in/{rn}", timeout=30)
            return (body or {}).get("m2m:cnt", {}).get("cni") if st == 200 else None

        res = {"latency_runs": n_lat}
        # c=1: from sending the CREATE to the notification's arrival, one at a time
        container("notLat", 1)
        conn = http.client.HTTPConnection(HOST, in_port, timeout=10)
        headers = {"X-M2M-Origin": "CAdmin", "X-M2M-RVI": "4", "Accept": "application/json",
                   "Content-Type": "application/json;ty=4"}
        lat, missing = [], 0
        for i in range(1, n_lat + 1):
            headers["X-M2M-RI"] = f"lat-{i}"
            t0 = time.time_ns()
            conn.request("POST", "/cse-in/notLat", body=BODY_CIN, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 201:
                raise BenchError(f"{system}: CIN CREATE answered {resp.status}")
            count, _, last, _ = self.notes(sim_port, want=i, ms=slack * 1000)
            if count < i:
                missing += 1
                self.sim_get(sim_port, "/_sim/reset")
                break
            lat.append((last - t0) / 1e6)
        conn.close()
        lat.sort()
        res["latency_p50_ms"] = statistics.median(lat) if lat else None
        res["latency_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
        res["latency_measured"] = len(lat)
        self.check(not missing, f"{system}: a notification did not arrive within {slack} s (c=1)")
        log(f"notifications {system}: CREATE -> notification c=1 p50 {res['latency_p50_ms']} ms, "
            f"p99 {res['latency_p99_ms']} ms ({len(lat)} runs)")

        # c=32: a fixed number of CREATEs, every notification counted at the receiver
        def burst(key, rn, subscribers, creates):
            container(rn, subscribers)
            script = lua_script(self.work, f"s8_{key}_{system}", "POST", BODY_CIN, 4, stop_after=creates)
            t0 = time.time_ns()
            r = wrk_until(f"http://{HOST}:{in_port}/cse-in/{rn}", 32, script, lambda: (cni(rn) or 0) >= creates)
            # what was stored, counted by discovery (`cni` can be wrong: the reference loses
            # updates) once the CREATEs still in flight when wrk stopped are done
            flushed(in_port)
            created = settled(lambda: discovered(in_port, f"/cse-in/{rn}?fu=1&ty=4") or 0)
            counted = cni(rn)
            self.check(counted == created, f"{system}: cni {counted} of {rn} but {created} instances stored")
            expected = created * subscribers
            bound = slack + expected / 50  # the reference delivers ~a few hundred per second
            count, first, last, distinct = self.notes(sim_port, want=expected, ms=int(bound * 1000))
            out = {"subscribers": subscribers, "creates_sent": creates, "created": created,
                   "cni": counted, "create_rps": r.get("rps"), "create_errors": r.get("errors"), "expected": expected,
                   "received": count, "distinct": distinct, "wait_bound_s": round(bound, 1)}
            out["seconds"] = (last - t0) / 1e9 if count else None
            out["per_s"] = count / out["seconds"] if count and out["seconds"] else None
            self.check(distinct == expected and r.get("errors") == 0,
                       f"{system}: {count} of {expected} notifications received ({key}; {r.get('errors')} errors)")
            log(f"notifications {system}: c=32, {subscribers} subscriber(s): {count} ({distinct} distinct)/{expected} in "
                f"{out['seconds'] and round(out['seconds'], 2)} s = {out['per_s'] and round(out['per_s'])}/s")
            self.sim_get(sim_port, "/_sim/reset")
            return out

        res["one"] = burst("one", "notOne", 1, n_one)
        res["hundred"] = burst("hundred", "notHundred", 100, n_hundred)

        # pending: the receiver is gone; notifications for it wait (ours) or fail (reference)
        container("notPending", 1)
        PROCS.kill(sim)
        time.sleep(0.5)
        res["rss_before_mib"] = rss_mib(proc)
        script = lua_script(self.work, f"s8_pending_{system}", "POST", BODY_CIN, 4, stop_after=n_pending)
        r = wrk_until(f"http://{HOST}:{in_port}/cse-in/notPending", 32, script,
                      lambda: (cni("notPending") or 0) >= n_pending)
        time.sleep(2.0)
        res["pending"] = settled(lambda: cni("notPending"))
        res["rss_pending_mib"] = rss_mib(proc)
        res["pending_create_rps"] = r.get("rps")
        self.check(r.get("errors") == 0, f"{system}: {r.get('errors')} errors creating for a dead target")
        log(f"notifications {system}: RSS {res['rss_before_mib']} MiB -> {res['rss_pending_mib']} MiB with "
            f"{res['pending']} notifications for a dead target")
        PROCS.kill(proc)
        return res

    # ---- the run --------------------------------------------------------------------------

    def run(self):
        self.setup()
        self.sc = self.results["scenarios"]
        systems = ["ours"] + (["reference"] if self.with_ref else [])
        if self.args.only == "notifications":
            self.sc["s8_notifications"] = {s: self.notifications(s) for s in systems}
            return self.finish()
        if self.args.only == "postgresql":
            self.postgres(systems)
            return self.finish()
        self.tree_scenarios(systems)
        # scenario 7: the local ceiling
        port = free_ports(1)[0]
        hello = PROCS.spawn([self.hello, str(port)], self.work, os.path.join(self.work, "hello.log"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)
        runs = {}
        for c in (1, 32):
            r = wrk(f"http://{HOST}:{port}/", c, self.duration)
            runs[str(c)] = r
            log(f"bare axum hello c={c}: {fmt_run(r)}")
            self.check(r["errors"] == 0, f"hello c={c}: {r['errors']} errors")
        self.sc["s7_axum_hello"] = {"runs": {"axum": runs}}
        PROCS.kill(hello)
        self.sc["s8_notifications"] = {s: self.notifications(s) for s in systems}
        self.postgres(systems)
        return self.finish()

    def tree_scenarios(self, systems):
        """Scenarios 1-6 on the trees of both systems, into `self.sc`."""
        sc = self.sc
        trees, regs = [], {}
        for system in systems:
            tree, reg = self.start_tree(system)
            trees.append(tree)
            regs[system] = {"start_to_registered_ms": reg}
        for tree in trees:
            regs[tree["system"]]["reregistration_ms"] = self.reregister(tree)
            log(f"{tree['system']}: re-registration after the IN answered again: "
                f"{regs[tree['system']]['reregistration_ms']} ms")
        sc["s5_registration"] = regs
        for tree in trees:
            self.populate(tree)
        time.sleep(1.0)
        sc["s4_rss"] = {t["system"]: {"idle": {k: rss_mib(p) for k, p in t["procs"].items()}} for t in trees}
        conc = (1, 32)
        self.load(trees, "s1_retrieve_csebase", "RETRIEVE CSEBase", "IN", "/cse-in", conc)
        self.load(trees, "s2_cin_create", "CREATE contentInstance", "IN", lambda c: f"/cse-in/cin{c}", conc,
                  method="POST", body=BODY_CIN, ty=4)
        self.cin_check(trees)
        if self.ours.pg is None:  # the ceiling of our IN's SQLite file; not of the PostgreSQL pass
            sc["s13_commit_ceiling"] = self.commit_ceiling()
        self.load(trees, "s3_retrieve_direct", "RETRIEVE container on the IN (direct)", "IN",
                  "/cse-in/benchCnt", conc)
        self.load(trees, "s3_retrieve_1hop", "RETRIEVE via MN -> IN (1 hop)", "MN", "/~/id-in/cse-in/benchCnt", conc)
        self.load(trees, "s3_retrieve_2hop", "RETRIEVE via ASN -> MN -> IN (2 hops)", "ASN",
                  "/~/id-in/cse-in/benchCnt", conc)
        for t in trees:
            sc["s4_rss"][t["system"]]["after_load"] = {k: rss_mib(p) for k, p in t["procs"].items()}
        for t in trees:
            for p in t["procs"].values():
                PROCS.stop(p, signal.SIGKILL)
        sc["s6_liveliness"] = {s: self.liveliness(s) for s in systems}

    # ---- scenarios 11 and 12: PostgreSQL ---------------------------------------------------------

    def postgres(self, systems):
        """Scenarios 1-6 and 8 again with every IN on PostgreSQL (ours and the reference), then
        one against two of our instances on one database and the take-over after kill -9."""
        if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
            self.check(self.mode == "smoke", "PostgreSQL server binaries missing (apt-get install postgresql)")
            log("PostgreSQL scenarios skipped: no server binaries under /usr/lib/postgresql")
            return
        pg = PgServer()
        self.results["postgres"] = {"server": pg.version, "scenarios": {}}
        self.sc = self.results["postgres"]["scenarios"]
        self.phase = "PostgreSQL: "
        self.ours.pg = pg
        if self.ref:
            self.ref.pg = pg
        try:
            self.tree_scenarios(systems)
            self.sc["s8_notifications"] = {s: self.notifications(s) for s in systems}
            self.sc["s10_instances"] = self.instances(pg)
            if self.mode != "smoke":
                self.results["postgres"]["calls"] = self.postgres_calls(pg)
        finally:
            self.ours.pg = None
            if self.ref:
                self.ref.pg = None
            self.phase = ""
            self.sc = self.results["scenarios"]
            pg.stop()

    def postgres_calls(self, pg):
        """`cargo bench --bench postgres_calls` against the server: what a read transaction
        costs awaited on a task against as the store runs it (the table it prints)."""
        url = pg.url(pg.new_database("calls"))
        out = subprocess.run(["cargo", "bench", "--quiet", "--bench", "postgres_calls"], cwd=ROOT,
                             capture_output=True, text=True, env=dict(os.environ, ACME_BENCH_POSTGRES_URL=url))
        self.check(out.returncode == 0, f"cargo bench --bench postgres_calls failed: {out.stderr[-300:]}")
        table = "\n".join(line for line in out.stdout.splitlines() if line.startswith(("|", "read ", "spawn")))
        log("postgres_calls:\n" + table)
        return table

    def instances(self, pg):
        """Ours only: one IN instance on a PostgreSQL database, then two on it behind no
        balancer (wrk per instance, half the connections each): CIN CREATE and RETRIEVE at
        c=32 in all; `cni` exact. Then kill -9 of the lease holder, three times in turn:
        time until the other one logs that it holds the lease."""
        url = pg.url(pg.new_database("ours-shared"))
        pa, pb = free_ports(2)
        start = lambda port, tag: self.ours.start("IN", port, {"IN": port}, tag=tag, database_url=url,
                                                   level="info", allowed=["/id-mn*"])[0]
        a = start(pa, "in-a")
        self.ours.wait_up("IN", pa, a)
        for rn in ("one", "two", "twoA", "twoB"):
            status, _, body = request(pa, "POST", "/cse-in", body={"m2m:cnt": {
                "rn": rn, "mni": 100000000, "mbs": 10000000000}}, ty=3)
            if status != 201:
                raise BenchError(f"instances: cannot create container {rn}: {status} {body}")
        create = lua_script(self.work, "instances-cin", "POST", BODY_CIN, 4)
        get = lua_script(self.work, "instances-get")
        runs = {"one": {}, "two": {}}
        for op, script in (("create", create), ("retrieve", get)):
            r = wrk(f"http://{HOST}:{pa}/cse-in/one", 32, self.duration, script)
            runs["one"][op] = {"rps": r["rps"], "errors": r["errors"], "a": r}
            log(f"one instance, {op} c=32: {fmt_run(r)}")
        b = start(pb, "in-b")
        self.ours.wait_up("IN", pb, b)
        # Each instance its own container first, then both on one container (its row is
        # then written by both: see the report).
        for op, script, paths in (("create_apart", create, ("twoA", "twoB")), ("retrieve_apart", get, ("twoA", "twoB")),
                                  ("create", create, ("two", "two")), ("retrieve", get, ("two", "two"))):
            both = [None, None]
            def go(i, port, rn):
                both[i] = wrk(f"http://{HOST}:{port}/cse-in/{rn}", 16, self.duration, script)
            threads = [threading.Thread(target=go, args=(i, port, rn)) for i, (port, rn) in enumerate(zip((pa, pb), paths))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rps = sum(r["rps"] or 0 for r in both)
            runs["two"][op] = {"rps": rps, "errors": sum(r["errors"] for r in both), "a": both[0], "b": both[1]}
            log(f"two instances, {op} c=16+16: {rps:.0f} req/s ({fmt_run(both[0])} | {fmt_run(both[1])})")
        for label, run in runs.items():
            for op, r in run.items():
                self.check(r["errors"] == 0, f"{label} instance(s), {op}: {r['errors']} errors")
        for rn, label in (("one", "one"), ("two", "two"), ("twoA", "two"), ("twoB", "two")):
            def counts():
                st, _, body = request(pa, "GET", f"/cse-in/{rn}", timeout=30)
                return ((body or {}).get("m2m:cnt", {}).get("cni") if st == 200 else None,
                        discovered(pb, f"/cse-in/{rn}?fu=1&ty=4"))
            # Read once the CREATEs in flight when wrk stopped are committed (each
            # instance's writer may still hold a batch).
            flushed(pa)
            flushed(pb)
            cni, stored = settled(counts)
            runs[label].setdefault("counts", {})[rn] = {"cni": cni, "stored": stored}
            self.check(cni is not None and cni == stored, f"container {rn}: cni {cni} != stored {stored}")
        # Take-over after kill -9 of the holder.
        procs = {"a": [a, pa, "in-a"], "b": [b, pb, "in-b"]}
        def log_of(tag):
            return os.path.join(self.work, f"ours-{tag}.log")
        def holds(tag, since=0):
            try:
                with open(log_of(tag), errors="replace") as fh:
                    fh.seek(since)
                    return "holds the lease" in fh.read()
            except OSError:
                return False
        holder, other = "a", "b"
        takeovers = []
        for n in range(3):
            deadline = time.monotonic() + 10
            while not holds(procs[holder][2]) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not holds(procs[holder][2]):
                self.check(False, f"take-over {n}: instance {holder} does not hold the lease")
                break
            since = os.path.getsize(log_of(procs[other][2]))
            t0 = time.monotonic()
            PROCS.kill(procs[holder][0])
            while not holds(procs[other][2], since) and time.monotonic() < t0 + 30:
                time.sleep(0.005)
            took = holds(procs[other][2], since)
            self.check(took, f"take-over {n}: the other instance did not take the lease within 30 s")
            if not took:
                break
            takeovers.append(round((time.monotonic() - t0) * 1e3, 1))
            log(f"take-over {n}: {takeovers[-1]} ms after kill -9 of the holder")
            port, tag = procs[holder][1], f"{procs[holder][2].split('-again')[0]}-again{n}"
            procs[holder] = [start(port, tag), port, tag]
            self.ours.wait_up("IN", port, procs[holder][0])
            holder, other = other, holder
        for proc, _, _ in procs.values():
            PROCS.kill(proc)
        return {"runs": runs, "takeover_ms": takeovers}

    def finish(self):
        self.results["elapsed_s"] = round(time.monotonic() - self.t_start, 1)
        self.results["failures"] = self.failures
        self.results["reference_anomalies"] = self.anomalies
        return self.results


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def f(x, nd=0, unit=""):
    if x is None:
        return "—"
    return f"{x:,.{nd}f}{unit}"


def ok_mark(cond):
    return "—" if cond is None else ("yes" if cond else "**no**")


def at_least(x, bound):
    return None if x is None or bound is None else x >= bound


def below(x, bound):
    return None if x is None or bound is None else x < bound


def all_met(conds):
    """True when every condition holds, False when one fails, None when one is unknown (and none fails)."""
    if False in conds:
        return False
    return None if not conds or None in conds else True


def pct(x):
    return f(None if x is None else 100 * x, 0, " %")


def run_of(sc, key, system, c):
    """The wrk run of `system` at concurrency `c` in scenario `key`, or None."""
    try:
        return sc[key]["runs"][system][str(c)]
    except (KeyError, TypeError):
        return None


def rps_of(sc, key, system, c):
    r = run_of(sc, key, system, c)
    return r.get("rps") if r else None


def commit_rate(sc):
    """The disk's fsync'd single-row commits per second measured in the run (scenario 13), or None."""
    return (sc.get("s13_commit_ceiling") or {}).get("commits_per_s")


def hop_limit(sc):
    """Issue 16's bound on the latency one forwarding hop adds: 2× the bare loopback round trip,
    taken as the bare axum hello's p50 at c=1."""
    h = run_of(sc, "s7_axum_hello", "axum", 1)
    return 2 * h["p50_ms"] if h and h.get("p50_ms") is not None else None


def hop_met(a1, a2, limit):
    """The latency added by 1 hop and the per-hop share of 2 hops (when measured) both within `limit`."""
    return all_met([at_least(limit, a1)] + ([] if a2 is None else [at_least(limit, a2)]))


def summary_rows(res):
    """(scenario, metric, ours, reference, ratio ours/ref, target, met) rows for the main table."""
    sc = res["scenarios"]
    rows = []
    rate = commit_rate(sc)
    for key, tgt_ratio in (("s1_retrieve_csebase", {"1": 50, "32": 50}), ("s2_cin_create", {"32": 100}),
                           ("s3_retrieve_direct", {}), ("s3_retrieve_1hop", {"1": 20, "32": 20}),
                           ("s3_retrieve_2hop", {})):
        s = sc.get(key)
        if not s:
            continue
        for c in ("1", "32"):
            o = s["runs"].get("ours", {}).get(c)
            r = s["runs"].get("reference", {}).get(c)
            orps, rrps = o and o["rps"], r and r["rps"]
            rt = ratio(orps, rrps)
            targets, mets = [], []
            if tgt_ratio.get(c):
                targets.append(f"≥ {tgt_ratio[c]}×")
                mets.append(at_least(rt, tgt_ratio[c]))
            if key == "s2_cin_create" and c == "32":
                targets[-1] += " reference, `cni` exact"
                mets.append(o.get("cni_ok") if o else None)
            if key == "s2_cin_create" and c == "1":
                targets.append(f"≥ 80 % of the disk's commit rate ({f(rate)}/s)" if rate is not None
                               else "≥ 80 % of the disk's commit rate (not measured)")
                mets.append(at_least(orps, rate and 0.8 * rate))
            h = rps_of(sc, "s7_axum_hello", "axum", c)
            if key in ("s1_retrieve_csebase", "s3_retrieve_direct") and h is not None:
                targets.append(f"≥ ½ axum ({f(h / 2)})")
                mets.append(at_least(orps, h / 2))
            unsupported = s.get("unsupported", {}).get("reference")
            rcell = (f"{f(rrps)} (p50 {f(r and r['p50_ms'], 3)} / p99 {f(r and r['p99_ms'], 3)} ms, {r and r['errors']} err)"
                     if r else f"not supported: {unsupported}" if unsupported else "—")
            rows.append((f"{s['label']}, c={c}", "req/s",
                         f"{f(orps)} (p50 {f(o and o['p50_ms'], 3)} / p99 {f(o and o['p99_ms'], 3)} ms, {o and o['errors']} err)" if o else "—",
                         rcell,
                         f(rt, 1, "×"), "; ".join(targets) or "—", ok_mark(all_met(mets))))
    return rows


def hop_rows(res):
    """(system, direct p50, 1-hop p50, 2-hop p50, added by 1 hop, added per hop over 2 hops,
    1-hop / direct throughput at c=32) per system; latencies at c=1, in ms."""
    sc = res["scenarios"]
    rows = []
    for system in ("ours", "reference"):
        def p50(key):
            r = run_of(sc, key, system, 1)
            return r.get("p50_ms") if r else None
        d, h1, h2 = p50("s3_retrieve_direct"), p50("s3_retrieve_1hop"), p50("s3_retrieve_2hop")
        if d is None or h1 is None:
            continue
        tput = ratio(rps_of(sc, "s3_retrieve_1hop", system, 32), rps_of(sc, "s3_retrieve_direct", system, 32))
        rows.append((system, d, h1, h2, h1 - d, None if h2 is None else (h2 - d) / 2, tput))
    return rows


def issue16_rows(res):
    """(target, measured, met?) per target of issue 16, from the numbers of this run (ours, the
    SQLite IN); "—" and "not measured" where a number is missing."""
    sc = res["scenarios"]
    rows = []

    def row(target, measured, met):
        rows.append((target, measured if measured is not None else "—", "not measured" if met is None else ok_mark(met)))

    for key, what in (("s1_retrieve_csebase", "RETRIEVE CSEBase"), ("s3_retrieve_direct", "RETRIEVE container (direct)")):
        for c in ("1", "32"):
            o, h = rps_of(sc, key, "ours", c), rps_of(sc, "s7_axum_hello", "axum", c)
            row(f"{what}, c={c}: ≥ 50 % of bare axum (same c)",
                o is not None and f"{f(o)} req/s = {pct(ratio(o, h))} of axum ({f(h)} req/s)" or None,
                at_least(o, h and h / 2))
    hops = {x[0]: x for x in hop_rows(res)}.get("ours")
    limit = hop_limit(sc)
    a1, a2, tput = (hops[4], hops[5], hops[6]) if hops else (None, None, None)
    row("Forwarded RETRIEVE: added latency per hop (c=1 p50; 1 hop, and 2 hops / 2) ≤ 2× the loopback round "
        "trip (bare axum p50, c=1)",
        hops and f"{f(a1, 3, ' ms')} (1 hop), {f(a2, 3, ' ms')} (2 hops, per hop); limit {f(limit, 3, ' ms')}" or None,
        hop_met(a1, a2, limit))
    d32, h32 = rps_of(sc, "s3_retrieve_direct", "ours", 32), rps_of(sc, "s3_retrieve_1hop", "ours", 32)
    row("Forwarded RETRIEVE, 1 hop, c=32: ≥ 50 % of the direct RETRIEVE's throughput",
        h32 is not None and f"{f(h32)} req/s = {pct(ratio(h32, d32))} of direct ({f(d32)} req/s)" or None,
        at_least(ratio(h32, d32), 0.5))
    cin1, rate = rps_of(sc, "s2_cin_create", "ours", 1), commit_rate(sc)
    row("Durable CIN CREATE, c=1: ≥ 80 % of the disk's raw fsync'd single-row commit rate (same run, same disk)",
        cin1 is not None and (f"{f(cin1)}/s = {pct(ratio(cin1, rate))} of {f(rate)} commits/s" if rate is not None
                              else f"— (CIN CREATE {f(cin1)}/s; commit rate not measured)") or None,
        at_least(cin1, rate and 0.8 * rate))
    o32, r32 = run_of(sc, "s2_cin_create", "ours", 32), rps_of(sc, "s2_cin_create", "reference", 32)
    rt = ratio(o32 and o32.get("rps"), r32)
    row("Durable CIN CREATE, c=32: ≥ 100× the reference, `cni` exact",
        o32 and (f"{f(o32.get('rps'))}/s = {f(rt, 1, '×')} reference ({f(r32)}/s); `cni` {o32.get('cni')} / "
                 f"stored {o32.get('stored')}") or None,
        all_met([at_least(rt, 100), o32.get("cni_ok") if o32 else None]))
    rss = (sc.get("s4_rss") or {}).get("ours", {})
    for when, label, bound in (("idle", "idle", 15), ("after_load", "after the load runs", 32)):
        x = rss.get(when, {}).get("IN")
        row(f"RSS of the IN {label} < {bound} MiB", x is not None and f(x, 1, " MiB") or None, below(x, bound))
    notif = (sc.get("s8_notifications") or {}).get("ours", {})
    p50 = notif.get("latency_p50_ms")
    row("CIN CREATE → notification received, c=1, p50 < 1 ms", p50 is not None and f(p50, 3, " ms") or None,
        below(p50, 1.0))
    hundred, one = (notif.get("hundred") or {}).get("per_s"), (notif.get("one") or {}).get("per_s")
    row("Notifications, c=32: ≥ 10,000/s (100 subscribers on one container)",
        hundred is not None and f"{f(hundred)}/s (1 subscriber: {f(one)}/s, bounded by the CREATE rate)" or None,
        at_least(hundred, 10000))
    return rows


def postgres_section(res):
    """Scenario 11 (every scenario again with the INs on PostgreSQL) and 12 (one against two of
    our instances on one database; take-over after kill -9)."""
    pg, main = res["postgres"], res["scenarios"]
    sc = pg["scenarios"]
    L = ["", "### 11. On PostgreSQL", "",
         f"The same scenarios in the same run with every IN on PostgreSQL ({pg.get('server')}, a throw-away server "
         "on 127.0.0.1 started by the driver with its default durability: `fsync` and `synchronous_commit` on; a new "
         "database per IN start). Ours: `[database] url`, pool of 8; the reference: `[database] type=postgresql`. "
         "MN and ASN stay in memory on both sides, as above. The first column repeats ours on SQLite from the table "
         "above. Throughput in requests/s (p50 latency); ratio = ours / reference, both on PostgreSQL.", "",
         "| scenario | ours, SQLite | ours, PostgreSQL | reference, PostgreSQL | ratio on PostgreSQL |",
         "| --- | --- | --- | --- | --- |"]

    def run(scen, system, c):
        try:
            return scen[system][c]
        except (KeyError, TypeError):
            return None

    def cell(r):
        return f"{f(r['rps'])} ({f(r['p50_ms'], 3)} ms)" if r and r.get("rps") is not None else "—"

    for key in ("s1_retrieve_csebase", "s2_cin_create", "s3_retrieve_direct", "s3_retrieve_1hop", "s3_retrieve_2hop"):
        here, there = sc.get(key), main.get(key)
        if not here:
            continue
        for c in ("1", "32"):
            o_sql = run((there or {}).get("runs"), "ours", c)
            o, r = run(here["runs"], "ours", c), run(here["runs"], "reference", c)
            unsupported = here.get("unsupported", {}).get("reference")
            rcell = cell(r) if r else ("not supported" if unsupported else "—")
            L.append(f"| {here['label']}, c={c} | {cell(o_sql)} | {cell(o)} | {rcell} | "
                     f"{f(ratio(o and o['rps'], r and r['rps']), 1, '×')} |")
    s2 = sc.get("s2_cin_create")
    if s2:
        checks = [f"{system} c={c}: `cni` {r.get('cni')} / stored {r.get('stored')} {ok_mark(r.get('cni_ok'))}"
                  for system, runs in s2["runs"].items() for c, r in runs.items()]
        L += ["", "CIN CREATE on PostgreSQL, `cni` against the stored instances: " + "; ".join(checks) + "."]
    reg, live, notif, rss = sc.get("s5_registration", {}), sc.get("s6_liveliness", {}), sc.get("s8_notifications", {}), sc.get("s4_rss", {})
    mreg, mlive, mnotif, mrss = (main.get(k, {}) for k in ("s5_registration", "s6_liveliness", "s8_notifications", "s4_rss"))

    def get(d, system, *keys):
        x = d.get(system)
        for k in keys:
            x = x.get(k) if isinstance(x, dict) else None
        return x

    rows = [("MN start → its CSR on the IN", (reg, mreg), ("start_to_registered_ms",), 1, " ms"),
            ("IN restarted empty → the MN's CSR again", (reg, mreg), ("reregistration_ms",), 1, " ms"),
            ("liveliness sweep over the registrees", (live, mlive), ("sweep_ms",), 1, " ms"),
            ("registrees gone → CSRs removed", (live, mlive), ("detect_gone_s",), 2, " s"),
            ("CIN CREATE → notification received, c=1, p50", (notif, mnotif), ("latency_p50_ms",), 3, " ms"),
            ("notifications/s, c=32, 1 subscriber", (notif, mnotif), ("one", "per_s"), 0, "/s"),
            ("notifications/s, c=32, 100 subscribers", (notif, mnotif), ("hundred", "per_s"), 0, "/s"),
            ("RSS of the IN after the load runs", (rss, mrss), ("after_load", "IN"), 1, " MiB")]
    L += ["", "| measurement | ours, SQLite | ours, PostgreSQL | reference, PostgreSQL | ratio on PostgreSQL |",
          "| --- | --- | --- | --- | --- |"]
    for label, (d, m), keys, nd, unit in rows:
        o, r, o_sql = get(d, "ours", *keys), get(d, "reference", *keys), get(m, "ours", *keys)
        L.append(f"| {label} | {f(o_sql, nd, unit)} | {f(o, nd, unit)} | {f(r, nd, unit)} | {f(ratio(o, r), 3, '×')} |")
    calls = pg.get("calls")
    if calls:
        L += ["", "What one read transaction costs on PostgreSQL (`cargo bench --bench postgres_calls`, in this run, "
              "against the same server): the core's transactions are synchronous closures on blocking threads "
              "(see ARCHITECTURE.md, \"Invariants\"), which the store runs with BEGIN pipelined with the first "
              "statement and the COMMIT not waited for.", ""]
        for line in calls.splitlines():
            # A table stands apart from the lines around it.
            if L[-1].startswith("|") != line.startswith("|") and L[-1]:
                L.append("")
            L.append(line)
    inst = sc.get("s10_instances")
    if inst:
        runs = inst["runs"]
        L += ["", "### 12. One against two of our instances on one PostgreSQL database", "",
              "Ours only. One IN on a fresh database, then a second IN on the same database (both durable, the "
              "first holds the lease). One instance: wrk `-c32` against it. Two instances: one wrk `-c16` against "
              "each at the same time, the rates added; first each instance on a container of its own, then both "
              "on one container. RETRIEVE reads the container the CREATEs just wrote to. `cni` is compared with "
              "the instances found by discovery through the other instance.", "",
              "| load, c=32 in all | one instance | two instances, a container each | two / one | "
              "two instances, one container | two / one |", "| --- | --- | --- | --- | --- | --- |"]
        for op, label in (("create", "CIN CREATE (durable)"), ("retrieve", "RETRIEVE container")):
            a = runs["one"].get(op, {}).get("rps")
            apart, same = runs["two"].get(op + "_apart", {}).get("rps"), runs["two"].get(op, {}).get("rps")
            L.append(f"| {label} | {f(a)}/s | {f(apart)}/s | {f(ratio(apart, a), 2, '×')} | {f(same)}/s | "
                     f"{f(ratio(same, a), 2, '×')} |")
        counts = {**runs["one"].get("counts", {}), **runs["two"].get("counts", {})}
        L += ["", "`cni` against the instances stored: " + ", ".join(
            f"{rn} {c.get('cni')} / {c.get('stored')} {ok_mark(c.get('cni') is not None and c.get('cni') == c.get('stored'))}"
            for rn, c in counts.items()) + ".", ""]
        took = inst.get("takeover_ms") or []
        if took:
            L.append(f"Take-over after `kill -9` of the lease holder, {len(took)} times in turn (the killed one "
                     f"restarted each time): {', '.join(f(t, 1) + ' ms' for t in took)} (median "
                     f"{f(statistics.median(took), 1)} ms) from the SIGKILL to the other instance's log line "
                     "\"holds the lease\". The server ends the killed process's session when its socket closes; "
                     "the other instance tries the advisory lock once a second, which bounds this at about 1 s.")
        L += ["", "What bounds two instances on this machine. Writes to different containers: each instance "
              "group-commits on its own connection, so two commits (two WAL flushes) are under way at once where one "
              "instance has one; that is what the CREATE rate follows. Writes to one container: every CIN CREATE "
              "updates the container's counters, so both writers queue on that one row, each waiting for the "
              "other's commit, and the rate falls below one instance's; the row is then left with many versions "
              "(by hand, right after such a run, one index lookup of it touched about 120 buffers and took 0.8 ms), "
              "which is why reading that container is slow for a while, while a container one instance wrote "
              "reads at full speed — a cost of PostgreSQL's row versions under concurrent updates of one row, to "
              "look into in issue 16. Reads: the two CPUs are shared by the server, both "
              "CSE processes and wrk, so a second instance adds no read throughput here; on a machine with more "
              "cores than one process uses it would."]
    return L


def write_report(res, path_md, path_png):
    meta, sc = res["meta"], res["scenarios"]
    L = []
    L.append("# Benchmarks: acme-cse against the reference CSE (ACME)")
    L.append("")
    L.append(f"Generated by `bash bench/run.sh{'' if res['mode'] == 'full' else ' --' + res['mode']}` "
             f"on **{meta['date']}** ({res['mode']} mode, {res['load_seconds']} s per load run, "
             f"{res.get('elapsed_s')} s in all). Every number below comes from that run; the raw results are "
             f"in `bench/results/{os.path.basename(res['json_path'])}`.")
    failures = [x for x in res.get("failures", []) if "reference" not in x]
    anomalies = res.get("reference_anomalies", []) + [x for x in res.get("failures", []) if "reference" in x]
    L.append("")
    if failures:
        L.append("**Checks of ours that failed in this run:** " + "; ".join(failures))
    else:
        L.append("All checks of our side passed in this run (no errors, `cni` consistent, all registrations and removals in time).")
    if anomalies:
        L.append("")
        L.append("**Anomalies of the reference seen in this run** (reported, not counted as driver failures): "
                 + "; ".join(anomalies) + ".")
    L.append("")
    L.append("## Issue 16 targets")
    L.append("")
    L.append("The targets of the performance issue (issue 16) against the numbers of this run (ours, the IN on "
             "SQLite; every comparison within this run: the bare axum ceiling of scenario 7, the disk's commit rate "
             "of scenario 13, the reference of the same scenario). The sections below give the details.")
    L.append("")
    L.append("| target | measured | met? |")
    L.append("| --- | --- | --- |")
    for target, measured, met in issue16_rows(res):
        L.append(f"| {target} | {measured} | {met} |")
    L.append("")
    L.append("## Machine and versions")
    L.append("")
    L.append(f"- CPU: {meta['cpu']}, {meta['nproc']} CPUs (`nproc`), {meta['memory_mib']} MiB RAM, Linux {meta['kernel']}; "
             "load generator, servers and the driver share these CPUs (loopback only); load average when the run "
             f"started: {meta.get('loadavg_at_start', '?')}.")
    L.append(f"- Ours: acme-cse at `{meta['git']}`, `{meta['build']}`, {meta['rustc']}.")
    L.append(f"- Reference: acmecse {meta['acmecse']} (PyPI) in a throw-away venv, {meta['python']}.")
    L.append(f"- Load generator: {meta['wrk']}, `wrk -t1 -c{{1,32}} -d{res['load_seconds']}s --timeout 5s --latency -s <script>.lua`.")
    L.append("")
    L.append("## Set-up")
    L.append("")
    L.append("- Each system runs as a tree of three processes on 127.0.0.1, free ports: IN-CSE `/id-in` (`cse-in`), "
             "MN-CSE `/id-mn` (`cse-mn`) registered to it, ASN-CSE `/id-asn` (`cse-asn`) registered to the MN; "
             f"SP-ID `//{SP_ID}`, admin originator `CAdmin`. Both trees run at the same time; every load scenario runs "
             "ours, then the reference, for c=1 then c=32 (interleaved).")
    L.append("- **Our storage**: the IN uses our default durable storage: SQLite (WAL) in a file in a temp directory, "
             "`durability = \"full\"` (fsync on every commit before the answer). MN and ASN: `in_memory = true`. "
             "Log level `warn`. Check intervals: IN 5 s, MN and ASN 200 ms (for the re-registration measurement).")
    L.append("- **Reference storage**: `databaseType=memory` (`--db-type memory`) on all three; `logLevel=warn`, file "
             "and screen logging off, headless, default HTTP server (Flask/werkzeug, `[http.wsgi] enable=false`). "
             "Check intervals: IN 5 s, MN and ASN 1 s (its unit is seconds).")
    L.append("- Requests: headers `X-M2M-Origin: CAdmin`, `X-M2M-RI: bench` (constant), `X-M2M-RVI: 4`, "
             "`Accept: application/json`; CREATE adds `Content-Type: application/json;ty=4` and the body "
             "`{\"m2m:cin\":{\"con\":\"x\"}}`. The forwarded RETRIEVE targets `/~/id-in/cse-in/benchCnt`, a container "
             "on the IN whose ACP grants everything to `all` (the forwarded originator is `/id-mn/CAdmin` resp. "
             "`/id-asn/CAdmin` there). Errors = non-2xx answers + socket errors as counted by wrk.")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("Throughput rows: ours and reference in requests/s (p50 / p99 latency, errors); ratio = ours / reference.")
    L.append("")
    L.append("| scenario | ours | reference | ratio | target | met? |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    for scen, _, o, r, rt, tgt, met in summary_rows(res):
        L.append(f"| {scen} | {o} | {r} | {rt} | {tgt} | {met} |")
    h = sc.get("s7_axum_hello", {}).get("runs", {}).get("axum", {})
    for c in ("1", "32"):
        if c in h:
            L.append(f"| 7. bare axum hello (the local ceiling), c={c} | {f(h[c]['rps'])} (p50 {f(h[c]['p50_ms'], 3)} / "
                     f"p99 {f(h[c]['p99_ms'], 3)} ms, {h[c]['errors']} err) | — | — | — | — |")
    # added latency per hop
    hops = hop_rows(res)
    if hops:
        L.append("")
        L.append("### 3. Forwarding: added latency per hop (c=1, p50) and throughput (c=32)")
        L.append("")
        limit = hop_limit(sc)
        L.append("| system | direct on the IN | via MN (1 hop) | via ASN→MN (2 hops) | added by 1 hop | added per hop (2 hops) | "
                 f"target ≤ 2× loopback round trip ({f(limit, 3, ' ms')}) met? | throughput 1 hop / direct, c=32 | "
                 "target ≥ 50 % met? |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for system, d, h1, h2, a1, a2, tput in hops:
            lat_met = ok_mark(hop_met(a1, a2, limit)) if system == "ours" else "—"
            tput_met = ok_mark(at_least(tput, 0.5)) if system == "ours" else "—"
            L.append(f"| {system} | {f(d, 3, ' ms')} | {f(h1, 3, ' ms')} | {f(h2, 3, ' ms')} | {f(a1, 3, ' ms')} | "
                     f"{f(a2, 3, ' ms')} | {lat_met} | {pct(tput)} | {tput_met} |")
        L.append("")
        L.append("Targets (issue 16): a hop adds at most 2× the bare loopback round trip, taken as the bare axum "
                 "hello's p50 at c=1 (scenario 7, this run); added by 1 hop = 1-hop p50 − direct p50, per hop over 2 "
                 "hops = (2-hop p50 − direct p50) / 2; and the 1-hop RETRIEVE at c=32 keeps ≥ 50 % of the direct "
                 "RETRIEVE's requests/s at c=32.")
        by = {row[0]: row for row in hops}
        if "ours" in by and "reference" in by:
            L.append("")
            L.append(f"Ratio ours/reference of the added latency per hop (1 hop): {f(ratio(by['ours'][4], by['reference'][4]), 3)}.")
    # CIN check
    s2 = sc.get("s2_cin_create")
    if s2:
        L.append("")
        L.append("### 2. CIN CREATE: `cni` against the stored instances")
        L.append("")
        L.append("| system | c | 2xx answers counted by wrk | `cni` of the container | instances found by discovery (`fu=1&ty=4`) | consistent? |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for system, runs in s2["runs"].items():
            for c, r in runs.items():
                L.append(f"| {system} | {c} | {r['requests'] - r['non2xx']} | {r.get('cni')} | {r.get('stored')} | {ok_mark(r.get('cni_ok'))} |")
        L.append("")
        L.append("`cni` may exceed wrk's count by at most c: requests in flight when wrk stops are served but not counted.")
        ceiling, cin1 = sc.get("s13_commit_ceiling") or {}, rps_of(sc, "s2_cin_create", "ours", 1)
        L.append("")
        if ceiling.get("commits_per_s") is not None:
            rate = ceiling["commits_per_s"]
            L.append(f"The disk's commit ceiling (scenario 13, right after these runs, same disk): "
                     f"`examples/bench_commit.rs` committed {f(rate)} single-row transactions per second for "
                     f"{ceiling.get('seconds')} s (SQLite, WAL, `synchronous = FULL`: one fsync per commit, one after "
                     f"the other, into a file in the directory of our IN's database). A durable CIN CREATE at c=1 "
                     f"makes the same kind of commit plus the request and more rows; ours reached {f(cin1)}/s = "
                     f"{pct(ratio(cin1, rate))} of it (target ≥ 80 %: {ok_mark(at_least(cin1, 0.8 * rate))}). At "
                     "c=32 the target is ≥ 100× the reference with `cni` exact (table above).")
        else:
            L.append("The disk's commit ceiling (scenario 13, `examples/bench_commit.rs`) was not measured in this "
                     "run, so the c=1 target (≥ 80 % of it) is not evaluated.")
    # RSS
    rss = sc.get("s4_rss")
    if rss:
        L.append("")
        L.append("### 4. Resident memory (VmRSS, MiB)")
        L.append("")
        L.append("| process | ours idle | ours after load | reference idle | reference after load | ratio idle | "
                 "target (ours idle < 15 MiB) met? | target (ours after load < 32 MiB, IN) met? |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for k in ("IN", "MN", "ASN"):
            o, r = rss.get("ours", {}), rss.get("reference", {})
            oi, oa = o.get("idle", {}).get(k), o.get("after_load", {}).get(k)
            ri, ra = r.get("idle", {}).get(k), r.get("after_load", {}).get(k)
            after = ok_mark(below(oa, 32)) if k == "IN" else "—"
            L.append(f"| {k} | {f(oi, 1)} | {f(oa, 1)} | {f(ri, 1)} | {f(ra, 1)} | {f(ratio(oi, ri), 2, '×')} | "
                     f"{ok_mark(below(oi, 15))} | {after} |")
        L.append("")
        L.append("\"Idle\" is after start, registration, the re-registration test and the set-up of the test resources; "
                 "\"after load\" after the last load run of scenarios 1–3 (the IN then holds all the content instances).")
    reg = sc.get("s5_registration")
    if reg:
        o, r = reg.get("ours", {}), reg.get("reference", {})
        L.append("")
        L.append("### 5. Registration")
        L.append("")
        L.append("| measurement | ours | reference | ratio | target | met? |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        a, b = o.get("start_to_registered_ms"), r.get("start_to_registered_ms")
        L.append(f"| MN process start → its CSR answers 200 on the IN | {f(a, 1)} ms | {f(b, 1)} ms | {f(ratio(a, b), 3, '×')} | < 100 ms | {ok_mark(a is not None and a < 100) if a is not None else '—'} |")
        a, b = o.get("reregistration_ms"), r.get("reregistration_ms")
        L.append(f"| IN restarted empty and answering → the MN's CSR exists again | {f(a, 1)} ms | {f(b, 1)} ms | {f(ratio(a, b), 3, '×')} | — | — |")
        L.append("")
        L.append("Method: the driver spawns the MN process and polls `GET /cse-in/id-mn` on the IN every 5 ms. Re-registration: "
                 "the IN is killed (SIGKILL) and restarted on the same port with an empty database; the clock starts when "
                 "its CSEBase answers (for the reference: when it printed \"CSE started\" and its CSEBase answers, since it "
                 "must not be called earlier) and stops when the MN's CSR answers 200. The MN's check interval bounds this: "
                 "ours 200 ms, the reference 1 s.")
    live = sc.get("s6_liveliness")
    if live:
        L.append("")
        L.append("### 6. Liveliness at scale")
        L.append("")
        L.append("| measurement | ours | reference | ratio | target | met? |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        o, r = live.get("ours", {}), live.get("reference", {})
        n = o.get("registrees")
        def sweep(x):
            if not x:
                return "—"
            if x.get("sweep_ms") is not None:
                return f"{f(x['sweep_ms'], 1)} ms (median of {x['sweeps_observed']})"
            return f"> {x.get('sweep_lower_bound_s')} s (no complete sweep seen; {x.get('probes_seen')} probes)"
        def detect(x):
            if not x:
                return "—"
            if x.get("detect_gone_s") is not None:
                return f"{f(x['detect_gone_s'], 2)} s"
            return f"> {x.get('detect_gone_lower_bound_s')} s ({x.get('csrs_after')} CSRs left)"
        a, b = o.get("sweep_ms"), r.get("sweep_ms")
        L.append(f"| registering {n} CSRs (8 client threads) | {f(o.get('register_s'), 2)} s | {f(r.get('register_s'), 2)} s | {f(ratio(o.get('register_s'), r.get('register_s')), 3, '×')} | — | — |")
        L.append(f"| one full liveliness sweep over {n} registrees | {sweep(o)} | {sweep(r)} | {f(ratio(a, b), 3, '×')} | < 1 s | {ok_mark(a is not None and a < 1000) if o else '—'} |")
        L.append(f"| {o.get('gone')} registrees gone → their CSRs removed | {detect(o)} | {detect(r)} | {f(ratio(o.get('detect_gone_s'), r.get('detect_gone_s')), 3, '×')} | — | — |")
        L.append("")
        L.append(f"Method: one simulator process (`examples/registree_sim.rs`, tokio, a minimal HTTP/1.1 responder) plays all "
                 f"{n} registrees: it answers every probe with 200, `X-M2M-RSC: 2000`, the request's `X-M2M-RI` and a small "
                 "`m2m:cb` body, and records the arrival time of each probe. The driver registers the CSRs directly on a "
                 f"fresh IN (POST ty=16, originator `/id-mnN`, `csi` `/id-mnN`, `cb` `/id-mnN/cse-mnN`, `poa` the simulator), "
                 f"check interval {o.get('check_interval_s')} s on both. Sweep = first to last probe arrival of a round in which "
                 "every registree was probed once (measured at the simulator; the last answer adds microseconds). Then the "
                 f"simulator is told that {o.get('gone')} registrees are gone (it closes the connection without an answer, "
                 "like a dead process), and the driver polls the IN's discovery `?fu=1&ty=16` every 50 ms until only "
                 f"{(n or 0) - (o.get('gone') or 0)} CSRs are left. Ours removes a registree after `liveliness_failures = 2` "
                 "failed rounds (so this is bounded below by one check interval plus the wait to the next round); the "
                 "reference removes it after one failed probe, and probes serially.")
    notif = sc.get("s8_notifications")
    if notif:
        o, r = notif.get("ours", {}), notif.get("reference", {})
        L.append("")
        L.append("### 8. Notifications")
        L.append("")
        L.append("| measurement | ours | reference | ratio | target (issue 16) | met? |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        a, b = o.get("latency_p50_ms"), r.get("latency_p50_ms")
        L.append(f"| CIN CREATE sent → notification received, c=1, p50 ({o.get('latency_measured')} runs) | "
                 f"{f(a, 3, ' ms')} | {f(b, 3, ' ms')} | {f(ratio(a, b), 3, '×')} | < 1 ms | {ok_mark(below(a, 1.0))} |")
        a, b = o.get("latency_p99_ms"), r.get("latency_p99_ms")
        L.append(f"| the same, p99 | {f(a, 3, ' ms')} | {f(b, 3, ' ms')} | {f(ratio(a, b), 3, '×')} | — | — |")
        for key, label in (("one", "1 subscriber"), ("hundred", "100 subscribers (100 targets)")):
            x, y = o.get(key) or {}, r.get(key) or {}
            def cell(z):
                if not z:
                    return "—"
                return (f"{f(z.get('per_s'))}/s ({z.get('received')} of {z.get('expected')} in "
                        f"{f(z.get('seconds'), 2)} s; CREATE {f(z.get('create_rps'))}/s)")
            a, b = x.get("per_s"), y.get("per_s")
            target = "≥ 10,000/s" if key == "hundred" else "— (bounded by the CREATE rate)"
            met = ok_mark(at_least(a, 10000)) if key == "hundred" else "—"
            L.append(f"| notifications per second, c=32, {label} on one container | {cell(x)} | {cell(y)} | "
                     f"{f(ratio(a, b), 1, '×')} | {target} | {met} |")
        def rss_cell(z):
            if not z:
                return "—"
            return f"{f(z.get('rss_before_mib'), 1)} → {f(z.get('rss_pending_mib'), 1)} MiB ({z.get('pending')} CINs)"
        L.append(f"| RSS of the IN, target dead, CINs created each with a notification for it | {rss_cell(o)} | "
                 f"{rss_cell(r)} | {f(ratio(o.get('rss_pending_mib'), r.get('rss_pending_mib')), 2, '×')} | — | — |")
        L.append("")
        L.append("Method: a fresh IN per system (ours: the durable configuration above, every notification written to "
                 "the outbox in the transaction of its CIN and delivered from there; the reference: in memory, its "
                 "default asynchronous sending), the registree simulator as the receiver (`/notify/...`, answered 200 "
                 "`X-M2M-RSC: 2000` at once, arrival times taken with the system clock, which the driver reads too). "
                 "Subscriptions `nct=1`, `enc` `net=[3]`, `chty=[4]`, one target URL each, created (and verified) before the clock "
                 "starts. c=1: the driver sends one CREATE, waits for its notification, sends the next; latency = "
                 "arrival − the moment the CREATE was sent. c=32: wrk sends a fixed number of CREATEs "
                 f"({(o.get('one') or {}).get('creates_sent')} with one subscriber, "
                 f"{(o.get('hundred') or {}).get('creates_sent')} with 100; a Lua `response` hook stops it), and the "
                 "rate is the notifications received divided by the time from wrk's start to the last arrival; the "
                 "expected count is the instances stored (found by discovery once the CREATEs in flight when wrk "
                 "stopped are done) × subscribers, and every notification must arrive (repeats are counted apart, by "
                 "path and `X-M2M-RI`). Dead target: the receiver is killed, then wrk creates the "
                 "instances; RSS read 2 s after the last answer. Ours keeps those notifications pending in the outbox "
                 "(up to `max_pending_per_target`, default 10,000) and delivers them when the target answers again; "
                 "the reference tries each once and drops it.")
    inproc = os.path.join(ROOT, "bench", "IN_PROCESS.md")
    if os.path.exists(inproc):
        L.append("")
        with open(inproc) as fh:
            L.append(fh.read().rstrip())
    if res.get("postgres"):
        L += postgres_section(res)
    if os.path.exists(path_png):
        L.append("")
        L.append("## Throughput per scenario")
        L.append("")
        L.append(f"![throughput per scenario](bench/results/{os.path.basename(path_png)})")
    else:
        L.append("")
        L.append("(No plot: matplotlib was not available in the venv.)")
    L.append("")
    L.append("## Exact commands")
    L.append("")
    L.append("```sh")
    L.append("bash bench/run.sh            # full run (this file); --quick: 2 s per load run; --smoke: ours only, CI")
    L.append(meta["build"])
    seen = set()
    for key, s in sc.items():
        for system, runs in (s.get("runs") or {}).items():
            for c, r in runs.items():
                cmd = re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:<port>", r["command"])
                cmd = re.sub(r"-s \S+/", "-s ", cmd)
                if cmd not in seen:
                    seen.add(cmd)
                    L.append(cmd)
    if (sc.get("s13_commit_ceiling") or {}).get("command"):
        L.append(sc["s13_commit_ceiling"]["command"])
    L.append("```")
    L.append("")
    L.append("The Lua scripts are written by `bench/run.py` (`lua_script`); the configurations of both systems are generated "
             "by `Ours.config` and `Reference.ini` there.")
    notes = os.path.join(ROOT, "bench", "NOTES.md")
    if os.path.exists(notes):
        L.append("")
        with open(notes) as fh:
            L.append(fh.read().rstrip())
    with open(path_md, "w") as fh:
        fh.write("\n".join(L) + "\n")


def plot(res, python, path_png):
    if not python:
        return False
    labels, ours, ref = [], [], []
    for key, s in res["scenarios"].items():
        runs = s.get("runs")
        if not runs or key == "s7_axum_hello":
            continue
        for c in ("1", "32"):
            o = runs.get("ours", {}).get(c)
            r = runs.get("reference", {}).get(c)
            labels.append(f"{s['label']}\nc={c}")
            ours.append((o or {}).get("rps") or 0)
            ref.append((r or {}).get("rps") or 0)
    hello = res["scenarios"].get("s7_axum_hello", {}).get("runs", {}).get("axum", {})
    for c in ("1", "32"):
        if c in hello:
            labels.append(f"bare axum hello\nc={c}")
            ours.append(hello[c]["rps"] or 0)
            ref.append(0)
    code = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
d = json.load(open(sys.argv[1]))
fig, ax = plt.subplots(figsize=(13, 6))
x = range(len(d["labels"]))
w = 0.4
ax.bar([i - w / 2 for i in x], d["ours"], w, label="acme-cse (ours)")
ax.bar([i + w / 2 for i in x], d["ref"], w, label="reference (ACME " + d["ver"] + ")")
ax.set_yscale("log")
ax.set_ylabel("requests/s (log scale)")
ax.set_xticks(list(x))
ax.set_xticklabels(d["labels"], fontsize=7, rotation=30, ha="right")
ax.set_title(d["title"])
ax.legend()
for i, (o, r) in enumerate(zip(d["ours"], d["ref"])):
    if o:
        ax.text(i - w / 2, o, f"{o:,.0f}", ha="center", va="bottom", fontsize=6)
    if r:
        ax.text(i + w / 2, r, f"{r:,.0f}", ha="center", va="bottom", fontsize=6)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""
    data = os.path.join(os.path.dirname(path_png), ".plot.json")
    with open(data, "w") as fh:
        json.dump({"labels": labels, "ours": ours, "ref": ref, "ver": res["meta"]["acmecse"],
                   "title": f"Throughput per scenario ({res['meta']['date']}, {res['meta']['nproc']} CPUs, wrk -t1)"}, fh)
    rc = subprocess.run([python, "-c", code, data, path_png], capture_output=True, text=True)
    os.remove(data)
    if rc.returncode != 0:
        log(f"no plot: {rc.stderr.strip().splitlines()[-1] if rc.stderr.strip() else rc.returncode}")
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="2 s per load run (development)")
    g.add_argument("--smoke", action="store_true", help="ours only, debug build, ~10 s (CI)")
    ap.add_argument("--no-build", action="store_true", help="use the existing binaries")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    ap.add_argument("--only", choices=["notifications", "postgresql"], help="run one scenario, write no report "
                    "(development)")
    ap.add_argument("--report-only", metavar="JSON", help="only rewrite BENCHMARKS.md from a results file "
                    "(e.g. after editing bench/NOTES.md); runs nothing")
    args = ap.parse_args()
    if args.report_only:
        with open(args.report_only) as fh:
            res = json.load(fh)
        write_report(res, os.path.join(ROOT, "BENCHMARKS.md"), os.path.join(ROOT, "bench", "results", "throughput.png"))
        log("rewrote BENCHMARKS.md from " + args.report_only)
        return 0
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bench = Bench(args)
    code = 0
    try:
        res = bench.run()
        if bench.mode != "smoke" and not args.only:
            out_dir = os.path.join(ROOT, "bench", "results")
            os.makedirs(out_dir, exist_ok=True)
            stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
            res["json_path"] = os.path.join(out_dir, f"{stamp}-{bench.mode}.json")
            with open(res["json_path"], "w") as fh:
                json.dump(res, fh, indent=1)
            png = os.path.join(out_dir, "throughput.png")
            if os.path.exists(png):
                os.remove(png)
            plot(res, bench.python, png)
            if not args.no_report and not args.only:
                write_report(res, os.path.join(ROOT, "BENCHMARKS.md"), png)
                log(f"wrote BENCHMARKS.md, {os.path.relpath(res['json_path'], ROOT)}")
        if bench.failures:
            log(f"{len(bench.failures)} check(s) failed in {bench.results.get('elapsed_s')} s: "
                + "; ".join(bench.failures))
            code = 1
        else:
            log(f"done in {res['elapsed_s']} s, all checks passed")
    except BenchError as e:
        log(f"ERROR: {e}")
        code = 1
    except subprocess.CalledProcessError as e:
        log(f"ERROR: {e}")
        code = 1
    finally:
        PROCS.stop_all()
        if args.keep or code != 0:
            log(f"work directory kept: {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
