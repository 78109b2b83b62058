#!/usr/bin/env python3
"""sluice against NGINX, HAProxy and a minimal hyper proxy, one core each.

Runs from a clone of this repository alone. Every proxy under test is pinned to CPU 0; the
load generators (wrk, h2load, openssl s_time) and the NGINX backends share CPU 1. Rounds
alternate targets (A B C A B C ...), medians of the rounds are reported, and ratios compare
figures from the same run only.

Lines (each scenario runs the ones that speak it):
  direct        the backend itself (plaintext only)
  nginx         NGINX, split_clients 90/10 on x-user-id, upstream keepalive
  haproxy       HAProxy, balance hdr(x-user-id) 90/10, http-reuse always
  floor         examples/hyper_floor.rs: the least a hyper proxy does (the floor of our stack)
  raw           examples/raw_floor.rs: httparse on tokio, bytes passed through untouched, an
                upstream connection per client connection (plain and HTTPS/1.1 only): the
                bound under any HTTP/1 code path of our own on this runtime
  sluice        bench/traffic.yaml: a 90/10 canary rollout sticky on x-user-id
  sluice-flags  bench/traffic-flags.yaml: the same plus 3 SDK-less flags (metrics are always on)
  floor-base, sluice-base
                with --baseline-dir DIR: the floor and sluice (bench/traffic.yaml) built in DIR,
                e.g. the default release build next to bench/pgo.sh's, measured in the same run

Scenarios:
  plain     HTTP/1.1 keep-alive, wrk -c64, x-user-id varies per request (p50/p99 from wrk)
  https1    HTTPS/1.1 keep-alive, wrk -c64 (TLS 1.3, no ALPN: http/1.1)
  h2        HTTPS/2, h2load -c64 -m10 (ALPN h2)
  h2c       HTTP/2 prior knowledge, h2load -c64 -m10
  hs-new    a new TLS connection per request, no resumption (openssl s_time -new, 4 clients)
  hs-resume a new TLS connection per request, resuming the session (s_time -reuse, 4 clients)

TLS: one ECDSA P-256 certificate (made here with openssl), TLS 1.3 only, TLS_AES_256_GCM_SHA384,
X25519, ALPN h2 + http/1.1 on every proxy; the harness prints what each one negotiated.

Figures per target: requests/s (handshake scenarios: connections/s), and CPU per request in
microseconds two ways: `proc` is the CPU time of the proxy's own processes (utime + stime from
/proc/<pid>/stat: robust when other work shares the machine), `core0` is the busy time of CPU 0
from /proc/stat (includes softirq network work that is charged to no process, and anything else
that ran on CPU 0). On a quiet machine `core0` is the fuller measure; on a busy one, `proc`.

Usage:
  cargo build --release --bin sluice --example hyper_floor --example raw_floor
  python3 bench/compare.py [--scenarios plain,https1,h2,h2c,hs-new,hs-resume] [--rounds 3]
                           [--secs 6] [--conns 64] [--target-dir target] [--install]
  python3 bench/compare.py --instructions --scenarios plain,https1,hs-new,hs-resume --secs 4
      # callgrind: user-space instructions per request (per connection for hs-*)
  python3 bench/compare.py --syscalls --scenarios plain --secs 4
      # perf tracepoints: system calls and context switches per request (the kernel's half)
`--install` installs the peers from Debian (apt-get: nginx-light haproxy wrk nghttp2-client
valgrind). Prints 'RESULT key=value' lines last.
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROXY_CPU = "0"
LOAD_CPU = "1"
CIPHER = "TLS_AES_256_GCM_SHA384"
DEBIAN = ["nginx-light", "haproxy", "wrk", "nghttp2-client", "valgrind"]

# Ports: (plain h1, TLS, h2c). nginx 1.22 cannot serve h1 and h2c on one port.
PORTS = {
    "direct": (9101, None, None),
    "nginx": (9200, 9210, 9220),
    "haproxy": (9300, 9310, 9320),
    "floor": (9500, 9510, 9500),
    "raw": (9540, 9550, None),
    "sluice": (9400, 9410, 9400),
    "sluice-flags": (9450, 9460, 9450),
    # --baseline-dir: the same two built another way (e.g. without PGO), in the same run.
    "floor-base": (9520, 9530, 9520),
    "sluice-base": (9470, 9480, 9470),
}

# Every line, in the order they run and print.
TARGETS = ("nginx", "haproxy", "floor", "raw", "floor-base", "sluice", "sluice-base", "sluice-flags")

USERS_LUA = """
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/", { ["x-user-id"] = "user-" .. (counter % 10000) })
end
"""


def wait_port(port, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def proc_cpu_ticks(pgid):
    """utime + stime of every process in process group `pgid`, in clock ticks."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            raw = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        # fields[0] is state (stat field 3): pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total


def core_busy_ticks(cpu):
    for line in open("/proc/stat"):
        if line.startswith(f"cpu{cpu} "):
            v = list(map(int, line.split()[1:]))
            return v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
    return 0


class Bench:
    def __init__(self, a):
        self.a = a
        self.d = tempfile.mkdtemp(prefix="sluice-compare-")
        self.procs = {}
        self.hz = os.sysconf("SC_CLK_TCK")
        tdir = a.target_dir or os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
        self.sluice = os.path.join(tdir, "release", "sluice")
        self.floor = os.path.join(tdir, "release", "examples", "hyper_floor")
        self.raw = os.path.join(tdir, "release", "examples", "raw_floor")
        bdir = a.baseline_dir
        self.sluice_base = bdir and os.path.join(bdir, "release", "sluice")
        self.floor_base = bdir and os.path.join(bdir, "release", "examples", "hyper_floor")

    # --- setup -------------------------------------------------------------------------

    def write(self, name, text):
        path = os.path.join(self.d, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def make_cert(self):
        self.cert = os.path.join(self.d, "cert.pem")
        self.key = os.path.join(self.d, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "7", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True)
        # HAProxy wants the key next to the certificate.
        self.pem = self.write("haproxy.pem", open(self.cert).read() + open(self.key).read())

    def configs(self):
        d = self.d
        self.write("users.lua", USERS_LUA)
        self.write("backend.conf", f"""
worker_processes 1; daemon off; pid {d}/backend.pid; error_log {d}/backend.err;
events {{ worker_connections 8192; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:9101; keepalive_requests 10000000; location / {{ return 200 "stable\\n"; }} }}
  server {{ listen 127.0.0.1:9102; keepalive_requests 10000000; location / {{ return 200 "canary\\n"; }} }} }}
""")
        n_plain, n_tls, n_h2c = PORTS["nginx"]
        master = "off" if self.a.instructions else "on"
        self.write("nginx.conf", f"""
worker_processes 1; daemon off; master_process {master}; pid {d}/nproxy.pid; error_log {d}/nproxy.err;
events {{ worker_connections 8192; }}
http {{ access_log off;
  upstream stable {{ server 127.0.0.1:9101; keepalive 256; }}
  upstream canary {{ server 127.0.0.1:9102; keepalive 256; }}
  split_clients "${{http_x_user_id}}" $variant {{ 10% canary; * stable; }}
  ssl_certificate {self.cert}; ssl_certificate_key {self.key};
  ssl_protocols TLSv1.3; ssl_conf_command Ciphersuites {CIPHER}; ssl_ecdh_curve X25519;
  ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
  keepalive_requests 10000000; http2_max_requests 10000000;
  server {{ listen 127.0.0.1:{n_plain}; listen 127.0.0.1:{n_tls} ssl http2; listen 127.0.0.1:{n_h2c} http2;
    location / {{ proxy_pass http://$variant; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Variant $variant; }} }} }}
""")
        h_plain, h_tls, h_h2c = PORTS["haproxy"]
        self.write("haproxy.cfg", f"""
global
  maxconn 4000
  nbthread 1
  ssl-default-bind-ciphersuites {CIPHER}
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-bind-curves X25519
  tune.ssl.cachesize 20000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{h_plain}
  bind 127.0.0.1:{h_tls} ssl crt {self.pem} alpn h2,http/1.1
  bind 127.0.0.1:{h_h2c} proto h2
  default_backend be
backend be
  balance hdr(x-user-id)
  hash-type consistent
  http-reuse always
  server stable 127.0.0.1:9101 weight 90
  server canary 127.0.0.1:9102 weight 10
""")
        state = os.path.join(d, "state")
        for name, traffic in (("sluice", "traffic.yaml"), ("sluice-flags", "traffic-flags.yaml"),
                              ("sluice-base", "traffic.yaml")):
            plain, tls, _ = PORTS[name]
            self.write(f"{name}.yaml", f"""
listeners:
  - {{ name: public, bind: "127.0.0.1:{plain}" }}
  - name: tls
    bind: "127.0.0.1:{tls}"
    tls: {{ certs: [{{ cert: {self.cert}, key: {self.key} }}] }}
admin: {{ bind: "127.0.0.1:0" }}
runtime: {{ workers: 1 }}
paths:
  traffic: {os.path.join(HERE, traffic)}
  approvals: {state}/{name}/approvals
  state_dir: {state}/{name}/state
trust: {{ require_approvals: false }}
""")

    def commands(self):
        """Command lines of every target, by name (the proxy's CPU pinning is added later)."""
        d = self.d
        cmds = {}
        if shutil.which("nginx"):
            cmds["nginx"] = ["nginx", "-c", f"{d}/nginx.conf"]
        if shutil.which("haproxy"):
            cmds["haproxy"] = ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"]
        for name, floor in (("floor", self.floor), ("floor-base", self.floor_base)):
            if floor and os.path.exists(floor):
                p, t, _ = PORTS[name]
                cmds[name] = [floor, "--listen", f"127.0.0.1:{p}", "--tls-listen", f"127.0.0.1:{t}",
                              "--tls", self.cert, self.key]
        if os.path.exists(self.raw):
            p, t, _ = PORTS["raw"]
            cmds["raw"] = [self.raw, "--listen", f"127.0.0.1:{p}", "--tls-listen", f"127.0.0.1:{t}",
                           "--tls", self.cert, self.key]
        if os.path.exists(self.sluice):
            cmds["sluice"] = [self.sluice, "run", "-c", f"{d}/sluice.yaml"]
            cmds["sluice-flags"] = [self.sluice, "run", "-c", f"{d}/sluice-flags.yaml"]
        if self.sluice_base and os.path.exists(self.sluice_base):
            cmds["sluice-base"] = [self.sluice_base, "run", "-c", f"{d}/sluice-base.yaml"]
        if self.a.targets:
            cmds = {n: c for n, c in cmds.items() if n in self.a.targets}
        return cmds

    def start(self, name, cmd, cpu, wrap=()):
        log = open(os.path.join(self.d, f"{name}.log"), "w")
        p = subprocess.Popen(["taskset", "-c", cpu, *wrap, *cmd], stdout=log, stderr=log,
                             start_new_session=True, cwd=REPO)
        self.procs[name] = p
        return p

    def log_tail(self, name):
        try:
            return open(os.path.join(self.d, f"{name}.log")).read()[-2000:]
        except OSError:
            return ""

    def stop_all(self):
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    # --- load generators ---------------------------------------------------------------

    def load(self, scenario, port, secs, warm=False):
        """Runs one load; returns (requests, rps, p50_ms or None, p99_ms or None, errors)."""
        a = self.a
        pin = ["taskset", "-c", LOAD_CPU]
        if scenario in ("plain", "https1"):
            scheme = "http" if scenario == "plain" else "https"
            cmd = pin + ["wrk", "-t1", f"-c{a.conns}", f"-d{secs}s", "--latency", "-s",
                         f"{self.d}/users.lua", f"{scheme}://127.0.0.1:{port}/"]
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            if warm:
                return None
            n = int(re.search(r"(\d+) requests in", out).group(1))
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)

            def lat(p):
                m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
                v = float(m.group(1))
                return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
            return n, rps, lat(50), lat(99), errs.group(0) if errs else None
        if scenario in ("h2", "h2c"):
            scheme = "https" if scenario == "h2" else "http"
            cmd = pin + ["h2load", "-t1", f"-c{a.conns}", "-m10", f"-D{secs}", "--warm-up-time=1",
                         "-H", "x-user-id: user-42", f"--tls13-ciphers={CIPHER}",
                         f"{scheme}://127.0.0.1:{port}/"]
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            if warm:
                return None
            m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
            if not m:
                return 0, 0.0, None, None, "h2load: " + out.strip().splitlines()[-1] if out.strip() else "h2load failed"
            done, ok = int(m.group(3)), int(m.group(4))
            rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
            mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
            p50 = None
            if mean:
                v = float(mean.group(1))
                p50 = v / 1000 if mean.group(2) == "us" else v * 1000 if mean.group(2) == "s" else v
            err = f"{done - ok} failed" if done != ok else None
            return ok, rps, p50, None, err
        # Handshakes: several sequential s_time clients at once.
        mode = "-new" if scenario == "hs-new" else "-reuse"
        clients = []
        for _ in range(4):
            clients.append(subprocess.Popen(
                pin + ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, "-tls1_3",
                       "-ciphersuites", CIPHER, "-www", "/", "-time", str(secs)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        n = 0
        for c in clients:
            out, _ = c.communicate()
            for m in re.finditer(r"(\d+) connections in ([\d.]+)s", out):
                n += int(m.group(1))
        if warm:
            return None
        return n, n / secs, None, None, None

    # --- checks --------------------------------------------------------------------------

    def negotiated(self, port, alpn):
        try:
            out = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", alpn, "-tls1_3",
                 "-brief"], input="", capture_output=True, text=True, errors="replace", timeout=10)
        except subprocess.TimeoutExpired:
            return "timeout"
        text = out.stdout + out.stderr
        keep = []
        for key in ("Protocol version", "Ciphersuite", "Peer signature type", "Server Temp Key",
                    "Negotiated TLS1.3 group", "ALPN protocol"):
            m = re.search(rf"{key}: (.*)", text)
            if m:
                keep.append(m.group(1).strip())
        return ", ".join(keep) or text.strip().splitlines()[-1:]

    def s_time_answer(self, port):
        """The status line a target answers to s_time's request (`GET / HTTP/1.0`, no Host):
        the handshake lines compare handshakes that each end in a proxied 200."""
        try:
            out = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-quiet"],
                input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, errors="replace",
                timeout=10)
        except subprocess.TimeoutExpired:
            return "timeout"
        lines = out.stdout.splitlines()
        return lines[0].strip() if lines else "no answer"

    # --- runs ----------------------------------------------------------------------------

    def run(self):
        a = self.a
        self.make_cert()
        self.configs()
        self.start("backend", ["nginx", "-c", f"{self.d}/backend.conf"], LOAD_CPU)
        cmds = self.commands()
        for name, cmd in cmds.items():
            self.start(name, cmd, PROXY_CPU)
        names = ["direct"] + [n for n in TARGETS if n in cmds]
        for n in TARGETS:
            if n not in cmds and (not n.endswith("-base") or a.baseline_dir):
                print(f"skipped {n}: not installed or not built (see --install and the build command)")
        for n in names:
            if not wait_port(PORTS[n][0]):
                print(self.log_tail(n))
                print(f"RESULT error={n}_did_not_listen")
                return 1
        if any(s not in ("plain",) for s in a.scenarios):
            for n in names:
                if PORTS[n][1]:
                    print(f"tls {n:13s} {self.negotiated(PORTS[n][1], 'h2,http/1.1')}")
                    if any(s.startswith("hs-") for s in a.scenarios) and self.port(n, "hs-new"):
                        answer = self.s_time_answer(PORTS[n][1])
                        warn = "" if " 200 " in answer + " " else "  WARNING: not a proxied 200"
                        print(f"s_time    {n:13s} {answer}{warn}")
        results = {}
        for sc in a.scenarios:
            targets = [n for n in names if self.port(n, sc)]
            if sc not in ("plain",):
                targets = [n for n in targets if n != "sluice-flags" or a.flags_everywhere]
            res = {n: {k: [] for k in ("rps", "p50", "p99", "proc", "core0")} for n in targets}
            for r in range(a.rounds):
                for n in targets:
                    port = self.port(n, sc)
                    self.load(sc, port, 1, warm=True)
                    pgid = self.procs[n].pid if n != "direct" else self.procs["backend"].pid
                    p0, c0 = proc_cpu_ticks(pgid), core_busy_ticks(PROXY_CPU)
                    got = self.load(sc, port, a.secs)
                    p1, c1 = proc_cpu_ticks(pgid), core_busy_ticks(PROXY_CPU)
                    nreq, rps, p50, p99, err = got
                    per = lambda t: t / self.hz / max(nreq, 1) * 1e6
                    res[n]["rps"].append(rps)
                    res[n]["proc"].append(per(p1 - p0))
                    res[n]["core0"].append(per(c1 - c0) if n != "direct" else float("nan"))
                    if p50 is not None:
                        res[n]["p50"].append(p50)
                    if p99 is not None:
                        res[n]["p99"].append(p99)
                    lat = "" if p50 is None else f" p50={p50:.3f}ms" if p99 is None else f" p50={p50:.3f}ms p99={p99:.3f}ms"
                    warn = f"  [{err}]" if err else ""
                    print(f"{sc:9s} round {r} {n:13s} rps={rps:9.0f}{lat} proc_us/req={per(p1 - p0):6.2f} "
                          f"core0_us/req={per(c1 - c0):6.2f}{warn}", flush=True)
            med = {n: {k: (statistics.median(v) if v else None) for k, v in m.items()} for n, m in res.items()}
            results[sc] = med
        self.report(results)
        return 0

    def port(self, name, scenario):
        if name == "raw" and scenario not in ("plain", "https1"):
            return None  # HTTP/1.1 only, and no upstream pool to make handshakes comparable
        plain, tls, h2c = PORTS[name]
        return {"plain": plain, "https1": tls, "h2": tls, "h2c": h2c, "hs-new": tls, "hs-resume": tls}[scenario]

    def report(self, results):
        print("\nmedians (CPU per request in µs; lower is better):")
        for sc, med in results.items():
            for n, m in med.items():
                lat = ""
                if m["p50"] is not None:
                    lat += f" {'p50' if sc in ('plain', 'https1') else 'mean'}={m['p50']:.3f}ms"
                if m["p99"] is not None:
                    lat += f" p99={m['p99']:.3f}ms"
                core0 = "" if m["core0"] != m["core0"] else f" core0={m['core0']:6.2f}"
                print(f"  {sc:9s} {n:13s} rps={m['rps']:9.0f}{lat} proc={m['proc']:6.2f}{core0}")
        for sc, med in results.items():
            for me in ("raw", "floor", "sluice", "sluice-flags"):
                if me not in med:
                    continue
                parts = []
                for peer in ("nginx", "haproxy", "floor"):
                    if peer not in med or peer == me:
                        continue
                    s, p = med[me], med[peer]
                    parts.append(f"{me}_vs_{peer}_proc={s['proc'] / p['proc']:.3f}")
                    if s["core0"] == s["core0"] and p["core0"] == p["core0"]:
                        parts.append(f"{me}_vs_{peer}_core0={s['core0'] / p['core0']:.3f}")
                    parts.append(f"{me}_vs_{peer}_rps={s['rps'] / p['rps']:.3f}")
                    if s["p99"] and p["p99"]:
                        parts.append(f"{me}_vs_{peer}_p99={s['p99'] / p['p99']:.3f}")
                if parts:
                    print(f"RESULT scenario={sc} " + " ".join(parts))
            # The same code built two ways (--baseline-dir), in this one run.
            parts = [f"{me}_vs_{me}-base_proc={med[me]['proc'] / med[me + '-base']['proc']:.3f}"
                     for me in ("floor", "sluice") if me in med and me + "-base" in med]
            if parts:
                print(f"RESULT scenario={sc} " + " ".join(parts))

    # --- instructions ----------------------------------------------------------------------

    def instructions(self):
        """User-space instructions per request (per connection in the handshake scenarios)
        under callgrind: deterministic, and blind to the kernel's share. Counters are zeroed
        after a warm-up, then one load runs and the counters are dumped."""
        a = self.a
        self.make_cert()
        self.configs()
        self.start("backend", ["nginx", "-c", f"{self.d}/backend.conf"], LOAD_CPU)
        cmds = self.commands()
        out = {}
        for name in [n for n in TARGETS if n in cmds]:
            cg = os.path.join(self.d, f"{name}.callgrind")
            p = self.start(name, cmds[name], PROXY_CPU,
                           wrap=("valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                                 "--trace-children=yes", "--dump-instr=no"))
            if not wait_port(PORTS[name][0], 120):
                print(self.log_tail(name))
                print(f"RESULT error={name}_did_not_listen")
                return 1
            seen = set()
            for sc in a.scenarios:
                port = self.port(name, sc)
                if not port or (name == "sluice-flags" and sc != "plain"):
                    continue
                self.load(sc, port, 2, warm=True)
                pids = [pid for pid in os.listdir("/proc") if pid.isdigit() and self.in_group(pid, p.pid)]
                subprocess.run(["callgrind_control", "-z", *pids], capture_output=True)
                nreq = self.load(sc, port, a.secs)[0]
                subprocess.run(["callgrind_control", "-d", *pids], capture_output=True)
                total = 0
                for f in sorted(os.listdir(self.d)):
                    if f.startswith(f"{name}.callgrind.") and f not in seen:
                        seen.add(f)
                        for line in open(os.path.join(self.d, f)):
                            if line.startswith("totals:") or line.startswith("summary:"):
                                total += int(line.split()[1])
                                break
                out[(sc, name)] = total / max(nreq, 1)
                if a.keep_callgrind:
                    os.makedirs(a.keep_callgrind, exist_ok=True)
                    for f in os.listdir(self.d):
                        if f.startswith(f"{name}.callgrind."):
                            shutil.copy(os.path.join(self.d, f), os.path.join(a.keep_callgrind, f"{sc}.{f}"))
                print(f"instructions {sc:9s} {name:13s} {out[(sc, name)]:10.0f} per request ({nreq} requests)",
                      flush=True)
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
            del self.procs[name]
        print("RESULT " + " ".join(f"{sc}_{n}_instructions={v:.0f}" for (sc, n), v in out.items()))
        return 0

    # --- system calls ---------------------------------------------------------------------

    SYSCALLS = ["read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
                "epoll_wait", "epoll_pwait", "epoll_ctl", "accept4", "futex", "setsockopt",
                "getsockopt", "getsockname", "getpeername", "close", "sched_yield", "shutdown"]

    def syscalls(self):
        """System calls and context switches per request (per connection for hs-*) from perf's
        tracepoints: the kernel-side cost callgrind cannot see, counted, not timed."""
        a = self.a
        self.make_cert()
        self.configs()
        self.start("backend", ["nginx", "-c", f"{self.d}/backend.conf"], LOAD_CPU)
        cmds = self.commands()
        names = [n for n in TARGETS if n in cmds]
        for n in names:
            self.start(n, cmds[n], PROXY_CPU)
        for n in names:
            if not wait_port(PORTS[n][0]):
                print(self.log_tail(n))
                print(f"RESULT error={n}_did_not_listen")
                return 1
        events = ["raw_syscalls:sys_enter", "context-switches", "page-faults"] + [f"syscalls:sys_enter_{c}" for c in self.SYSCALLS]
        out = {}
        for sc in a.scenarios:
            for n in names:
                port = self.port(n, sc)
                if not port or (n == "sluice-flags" and sc != "plain"):
                    continue
                self.load(sc, port, 1, warm=True)
                pgid = self.procs[n].pid
                pids = [pid for pid in os.listdir("/proc") if pid.isdigit() and self.in_group(pid, pgid)]
                perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", ",".join(pids)],
                                        stderr=subprocess.PIPE, text=True)
                time.sleep(1.0)  # attached to every thread before the load starts
                nreq = self.load(sc, port, a.secs)[0]
                perf.send_signal(signal.SIGINT)
                _, err = perf.communicate()
                counts = {}
                for line in err.splitlines():
                    f = line.split(",")
                    if len(f) > 2 and f[0].strip().isdigit():
                        counts[f[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all")] = int(f[0])
                per = {k: v / max(nreq, 1) for k, v in counts.items() if v}
                out[(sc, n)] = per
                detail = " ".join(f"{k}={v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
                print(f"syscalls {sc:9s} {n:13s} per request ({nreq} requests): {detail}", flush=True)
        print("RESULT " + " ".join(f"{sc}_{n}_syscalls={v.get('all', 0):.2f}" for (sc, n), v in out.items()))
        return 0

    @staticmethod
    def in_group(pid, pgid):
        try:
            raw = open(f"/proc/{pid}/stat").read()
            return int(raw[raw.rindex(")") + 2:].split()[2]) == pgid
        except (OSError, ValueError):
            return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="plain,https1,h2,h2c,hs-new,hs-resume")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=6)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--target-dir", help="cargo target directory (default: $CARGO_TARGET_DIR or ./target)")
    ap.add_argument("--baseline-dir", metavar="DIR",
                    help="another target directory: its sluice and floor run too, as sluice-base and "
                         "floor-base (e.g. the default build against bench/pgo.sh's, in one run)")
    ap.add_argument("--flags-everywhere", action="store_true",
                    help="run sluice-flags in the TLS and HTTP/2 scenarios too")
    ap.add_argument("--instructions", action="store_true",
                    help="instructions per request under callgrind instead of the wall-clock runs")
    ap.add_argument("--syscalls", action="store_true",
                    help="system calls and context switches per request (perf tracepoints) instead")
    ap.add_argument("--targets", default="",
                    help="only these lines (comma-separated, e.g. floor,sluice; default: all)")
    ap.add_argument("--keep-callgrind", metavar="DIR",
                    help="with --instructions: copy the callgrind dumps to DIR (for callgrind_annotate)")
    ap.add_argument("--install", action="store_true", help="apt-get install the peers first")
    a = ap.parse_args()
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    a.targets = [t for t in a.targets.split(",") if t]
    if a.install:
        missing = [p for p in DEBIAN if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
        if missing:
            subprocess.run(["apt-get", "update"], check=True)
            subprocess.run(["apt-get", "install", "-y", *missing], check=True)
    for tool in ("taskset", "openssl", "wrk") + (("valgrind",) if a.instructions else ()) + (("perf",) if a.syscalls else ()):
        if not shutil.which(tool):
            print(f"RESULT error=missing_{tool} (install: apt-get install {' '.join(DEBIAN)})")
            return 1
    b = Bench(a)
    try:
        return b.instructions() if a.instructions else b.syscalls() if a.syscalls else b.run()
    finally:
        b.stop_all()
        shutil.rmtree(b.d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
