"""Scale (issue 17): one real `shoal manager` and one real `shoal registry` (SQLite) over 100 and then 1,000
simulated nodes -- engines from `python -m shoal.sim.engines` (a few processes, `--first` splitting the
names), agents from `python -m shoal.sim.agents` (the real agent's publish path) -- filled to 30
containers a node, measured through docker-py and the real docker CLI, each figure printed beside classic
Swarm's published one (docker.com, "Scale Testing Docker Swarm to 30,000 Containers", 2015: 1,000 nodes,
30,000 containers, Consul) and the issue's goal:

  run      `docker run -d` latency while the cluster fills: 16 docker-py clients, each run a create and a
           start (what `docker run -d` sends), p50/p90/p99 (Swarm p50 230 / p90 250 / p99 400 ms; goal at
           1,000 nodes p99 <= 100 ms); then sequential runs of the real docker CLI on the full cluster,
           beside the same CLI against one simulated engine directly (what the CLI itself costs)
  info     `docker info` (CLI) and GET /info (Swarm p50 150 / p99 360 ms; goal p99 <= 100 ms)
  ps       `docker ps -a` over every container (CLI) and GET /containers/json?all=1 (goal p99 <= 500 ms)
  idle     the manager's RSS and CPU with the agents publishing at their interval and no client
           (goal <= 500 MB, <= 10% of a core); the registry's, the engines' and the agents' beside it
  publish  the agents at a 1 s interval: publishes/s the registry took (goal: every node every second,
           1,000/s at 1,000 nodes, with checks: no TTL check gone critical), its commits/s, publish
           latency, the manager's and the registry's CPU meanwhile
  fact     a fact changed on one node (its agent publishes at once, as on a changed facts.d file) to the
           first placement that sees it (goal <= 1 s): with the agents at their interval (5 s, the real
           agent's default), and again at 1 s, where the registry, the manager and 1,000 agents on this
           one 2-core machine want more than its two cores (the CPU line of the publish phase says how
           much), so that figure is mostly the machine's queue
  growth   each cost at the largest size over the smallest, against the growth in nodes (goal <= linear)

Everything listens on loopback ports the OS picks; every process runs in its own process group and is
killed at the end, also on failure or Ctrl-C. `--profile DIR` records the manager and the registry with
py-spy (not a dependency: `.venv/bin/pip install py-spy`) during the fill, idle and publish phases and
prints their top functions; figures taken under the profiler are a little slower.

Run as root (the docker CLI needs no daemon of its own here):
    .venv/bin/python benchmarks/scale.py                 # 100 and 1,000 nodes x 30
    .venv/bin/python benchmarks/scale.py --quick         # 100 and 300 nodes x 10, a few minutes
    .venv/bin/python benchmarks/scale.py --nodes 1000 --profile /tmp/scale-prof
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker
import requests
from _bench import pct
from prometheus_client.parser import text_string_to_metric_families

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
DOCKER = shutil.which("docker") or "docker"
NODES_PER_ENGINE_PROC = 250
NODES_PER_AGENT_PROC = 500
CLIENTS = 16
IMAGE, CMD = "busybox", ["sleep", "3600"]
TICK = os.sysconf("SC_CLK_TCK")
SWARM = {
    "run_p50": 230.0,
    "run_p90": 250.0,
    "run_p99": 400.0,
    "info_p50": 150.0,
    "info_p99": 360.0,
}


# --- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def line(self, timeout: float) -> str:
        """The next line it prints on stdout, or a failure naming its log."""
        assert self.popen.stdout is not None
        got: list[str] = []
        t = threading.Thread(target=lambda: got.append(self.popen.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout)
        if not got or not got[0]:
            raise RuntimeError(
                f"{self.name} printed nothing in {timeout:.0f} s; see {self.log}:\n{self.tail()}"
            )
        return got[0]

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def ask(self, line: str, timeout: float = 30) -> dict[str, Any]:
        self.send(line)
        return json.loads(self.line(timeout))

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""


class Procs:
    """Every process the benchmark starts, each in a process group of its own, all killed by `close`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], *, stdin: bool = False, stdout: bool = False) -> Proc:
        log = self.work / f"{name}.log"
        err: IO[str] = open(log, "w")  # noqa: SIM115
        popen = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else err,
            stderr=err,
            text=True,
            start_new_session=True,  # its own process group: killed whole at the end
        )
        err.close()
        p = Proc(name, popen, log)
        self.procs.append(p)
        return p

    def stop(self, p: Proc, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.popen.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.popen.wait()
        if p in self.procs:
            self.procs.remove(p)

    def close(self) -> None:
        for p in self.procs:  # all at once, then each waited for
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in list(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.popen.wait()
        self.procs.clear()


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    return 0.0


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class CPU:
    """CPU used by some processes between `start` and `take`, as a share of one core."""

    def __init__(self, procs: dict[str, list[Proc]]) -> None:
        self.procs = procs
        self.start()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: sum(cpu_seconds(p.pid) for p in ps) for k, ps in self.procs.items()}

    def take(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {
            k: (sum(cpu_seconds(p.pid) for p in ps) - self.c0[k]) / dt for k, ps in self.procs.items()
        } | {"seconds": dt}


# --- profiling -------------------------------------------------------------------------------------


class Profiler:
    """py-spy record on the manager and the registry for one phase, summarised when it ends."""

    RATE = 50

    def __init__(self, out: Path | None, procs: Procs) -> None:
        self.out = out
        self.procs = procs
        self.spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if out is not None:
            if not Path(self.spy).exists():
                raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
            out.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def phase(self, tag: str, targets: dict[str, Proc]) -> Iterator[None]:
        if self.out is None:
            yield
            return
        running = []
        for name, target in targets.items():
            path = self.out / f"{tag}-{name}.txt"
            argv = [self.spy, "record", "-p", str(target.pid), "-r", str(self.RATE), "-F", "--format", "raw"]
            running.append((name, path, self.procs.start(f"py-spy-{tag}-{name}", [*argv, "-o", str(path)])))
        cpu = CPU({name: [p] for name, p in targets.items()})
        try:
            yield
        finally:
            used = cpu.take()
            for name, path, spy in running:
                self.procs.stop(spy, signal.SIGINT, wait=30)
                if path.exists():
                    print(
                        f"    profile {tag} {name}: {used[name]:.0%} of a core over {used['seconds']:.0f} s "
                        f"({path}):"
                    )
                    for row in summarise(path, used[name]):
                        print(f"      {row}")


ENTRY = re.compile(r"\((?:shoal/__main__|shoal/cli/)")  # the frames every sample of a process has


def summarise(path: Path, cpu: float, top: int = 12) -> list[str]:
    """py-spy's collapsed stacks as the functions with the most CPU: each one's share of the samples in
    which the process was not idle, and that share of the CPU it used (`cpu`, in cores, from /proc). On a
    loaded machine a thread waiting for a core still counts as not idle, so shares are read against the
    measured CPU, not against the wall clock. Shoal's own functions by inclusive time, then any by self."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        for f in set(frames):
            inclusive[f] += int(count)
        own[frames[-1]] += int(count)
    samples = max(1, sum(own.values()))

    def rows(items: list[tuple[str, int]]) -> list[str]:
        return [
            f"{100 * inclusive[f] / samples:6.1f}% {100 * own[f] / samples:5.1f}% "
            f"{100 * cpu * inclusive[f] / samples:6.1f}%  {f}"
            for f, _ in items
        ]

    ours = [(f, n) for f, n in inclusive.items() if "shoal/" in f and not ENTRY.search(f)]
    return [
        f"{'total':>7} {'self':>6} {'core':>7}  (shares of the busy samples; core: total x CPU used)",
        *rows(sorted(ours, key=lambda x: -x[1])[:top]),
        "  by self time:",
        *rows(own.most_common(top)),
    ]


# --- one cluster -------------------------------------------------------------------------------------


@dataclass
class Cluster:
    nodes: int
    registry: str
    manager: str
    procs: Procs
    reg: Proc
    mgr: Proc
    engine_procs: list[Proc]
    agent_procs: list[Proc]
    engines: dict[str, str]
    agent_of: dict[str, Proc] = field(default_factory=dict)
    up: dict[str, Any] = field(default_factory=dict)

    def unreachable_marks(self) -> int:
        """How often the manager has marked an engine unreachable (each engine answers throughout)."""
        with contextlib.suppress(OSError):
            return self.mgr.log.read_text(errors="replace").count('event="engine unreachable"')
        return 0

    @property
    def cpu_groups(self) -> dict[str, list[Proc]]:
        return {"manager": [self.mgr], "registry": [self.reg], "engines": self.engine_procs,
                "agents": self.agent_procs}  # fmt: skip

    def keys_written(self) -> float:
        """The registry's own count of keys written (its /metrics, the store's change feed)."""
        text = requests.get(f"{self.registry}/metrics", timeout=30).text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "shoal_registry_writes_total"
        )

    def engine_calls(self) -> float:
        """The manager's own count of calls to the engines (its /metrics, every node)."""
        text = requests.get(f"{self.manager}/metrics", timeout=30).text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "shoal_manager_engine_call_seconds_count"
        )

    def agents_say(self, line: str) -> list[dict[str, Any]]:
        return [p.ask(line) for p in self.agent_procs]

    def gc_pauses(self) -> dict[str, dict[str, list[float]]]:
        """Each server's garbage-collection pauses so far (its /metrics): per generation, how many, their
        total seconds and the longest one."""
        out: dict[str, dict[str, list[float]]] = {}
        for name, url in (("manager", self.manager), ("registry", self.registry)):
            text = requests.get(f"{url}/metrics", timeout=30).text
            got = out[name] = {g: [0.0, 0.0, 0.0] for g in "012"}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    gen = s.labels.get("generation")
                    if gen not in got:
                        continue
                    if s.name.endswith("_gc_pause_seconds_count"):
                        got[gen][0] = s.value
                    elif s.name.endswith("_gc_pause_seconds_sum"):
                        got[gen][1] = s.value
                    elif s.name.endswith("_gc_pause_longest_seconds"):
                        got[gen][2] = s.value
        return out


@contextlib.contextmanager
def gc_phase(c: Cluster, tag: str, out: dict[str, Any]) -> Iterator[None]:
    """The collector's pauses in each server during one phase, printed and kept in `out[tag]`: how much of
    a phase's latency is the garbage collector stopping the event loop rather than shoal's own code."""
    before = c.gc_pauses()
    t0 = time.monotonic()
    yield
    took, after = time.monotonic() - t0, c.gc_pauses()
    seen = out[tag] = {}
    parts = []
    for name in after:
        gens = {g: [a - b for a, b in zip(after[name][g][:2], before[name][g][:2], strict=True)]
                for g in after[name]}  # fmt: skip
        seen[name] = {g: {"count": n, "seconds": s} for g, (n, s) in gens.items()}
        seen[name]["longest_s"] = after[name]["2"][2]
        paused = sum(s for _, s in gens.values())
        parts.append(
            f"{name} {100 * paused / took:.1f}% of the time ("
            + ", ".join(f"gen{g} {n:.0f}x {1000 * s:.0f} ms" for g, (n, s) in gens.items())
            + f"; longest full {1000 * after[name]['2'][2]:.0f} ms)"
        )
    print(f"    gc pauses during {tag}: " + "; ".join(parts), flush=True)


def wait_http(url: str, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not answer {url} in {timeout:.0f} s:\n{proc.tail()}")
        time.sleep(0.1)


def healthy_nodes(manager: str) -> tuple[int, int]:
    info = requests.get(f"{manager}/info", timeout=60).json()
    status = info.get("SystemStatus") or []
    nodes = next((int(v) for k, v in status if k == "Nodes"), 0)
    return nodes, sum(1 for k, v in status if k.strip() == "└ Status" and v == "Healthy")


def bring_up(n: int, procs: Procs, work: Path, args: argparse.Namespace) -> Cluster:
    """Registry, engines, agents (each published once), manager; then until the manager sees every node
    healthy, or `--up-timeout` passed (the run goes on with the nodes it sees, and says so)."""
    interval, latency_ms = args.agent_interval, args.engine_latency_ms
    t_begin = time.monotonic()
    http, dns = free_port(), free_port()
    registry = f"http://127.0.0.1:{http}"
    reg = procs.start(
        "registry",
        [PY, "-m", "shoal", "registry", "--store", f"sqlite:///{work}/registry.db", "--http",
         f"127.0.0.1:{http}", "--dns", f"127.0.0.1:{dns}", "--node", "scale", "--log-level", "warning"],
    )  # fmt: skip
    wait_http(f"{registry}/v1/status/leader", reg, 30)
    engine_procs, engines, maps = [], {}, []
    per = math.ceil(n / math.ceil(n / NODES_PER_ENGINE_PROC))
    for i, first in enumerate(range(0, n, per)):
        count = min(per, n - first)
        engine_procs.append(
            procs.start(
                f"engines-{i}",
                [
                    PY,
                    "-m",
                    "shoal.sim.engines",
                    "--nodes",
                    str(count),
                    "--first",
                    str(first),
                    "--latency-ms",
                    str(latency_ms),
                ],
                stdout=True,
            )  # fmt: skip
        )
    for p in engine_procs:
        got = json.loads(p.line(120))
        engines.update(got)
        maps.append(got)
    agent_procs, agent_of = [], {}
    names = sorted(engines)
    chunks = math.ceil(n / NODES_PER_AGENT_PROC)
    per = math.ceil(n / chunks)
    for i in range(chunks):
        mine = {k: engines[k] for k in names[i * per : (i + 1) * per]}
        path = work / f"agents-{i}.json"
        path.write_text(json.dumps(mine))
        p = procs.start(
            f"agents-{i}",
            [PY, "-m", "shoal.sim.agents", "--registry", registry, "--engines", str(path), "--interval",
             str(interval), "--seed", str(i)],
            stdin=True,
            stdout=True,
        )  # fmt: skip
        agent_procs.append(p)
        agent_of.update(dict.fromkeys(mine, p))
    t_agents = time.monotonic()
    stopped = 0
    for p in agent_procs:
        stopped += json.loads(p.line(300)).get("stopped", 0)  # each has published once, or stopped
    t_published = time.monotonic()
    mport = free_port()  # only now: picked before the engines' 1,000 listeners, one of them once took it
    manager = f"http://127.0.0.1:{mport}"
    mgr = procs.start(
        "manager",
        [PY, "-m", "shoal", "manager", "--registry", registry, "--listen", f"127.0.0.1:{mport}",
         "--insecure-tcp", "--log-level", "warning"],
    )  # fmt: skip
    t0 = time.monotonic()
    wait_http(f"{manager}/_ping", mgr, 600)
    t_serving = time.monotonic()
    while (seen := healthy_nodes(manager)) != (n, n) and time.monotonic() - t0 < args.up_timeout:
        time.sleep(1)
    c = Cluster(n, registry, manager, procs, reg, mgr, engine_procs, agent_procs, engines, agent_of)
    c.up = {
        "engines_and_registry_s": t_agents - t_begin,
        "agents_published_s": t_published - t_agents,
        "manager_serving_s": t_serving - t0,
        "manager_all_healthy_s": time.monotonic() - t0 if seen == (n, n) else None,
        "healthy": seen[1],
        "unreachable_marks": c.unreachable_marks(),
        "agents_stopped": stopped,
    }
    say(
        f"up: registry and {len(engine_procs)} engine processes in {c.up['engines_and_registry_s']:.0f} s, "
        f"{len(agent_procs)} agent processes published in {c.up['agents_published_s']:.0f} s "
        f"({stopped} agents stopped: their claim was refused)",
        f"manager serving after {c.up['manager_serving_s']:.0f} s, "
        + (
            f"all {n} nodes healthy after {c.up['manager_all_healthy_s']:.0f} s"
            if seen == (n, n)
            else f"ONLY {seen[1]} of {n} nodes healthy after {args.up_timeout:.0f} s (going on with them)"
        ),
        f"'engine unreachable' marks in the manager's log: {c.up['unreachable_marks']}",
    )
    return c


# --- measurements ----------------------------------------------------------------------------------


def ms(xs: list[float]) -> dict[str, float]:
    if not xs:  # nothing succeeded (the figures say so, rather than the benchmark stopping)
        return dict.fromkeys(("p50", "p90", "p99", "max"), math.nan) | {"n": 0}
    return {f"p{p}": pct(xs, p) * 1000 for p in (50, 90, 99)} | {"max": max(xs) * 1000, "n": len(xs)}


def fmt(d: dict[str, float]) -> str:
    return f"p50 {d['p50']:.0f} / p90 {d['p90']:.0f} / p99 {d['p99']:.0f} ms (max {d['max']:.0f}, n={d['n']})"


def fill(c: Cluster, total: int, timeout: float) -> dict[str, Any]:
    """`total` containers through the manager from CLIENTS docker-py clients, each a create and a start
    (fewer if `timeout` seconds pass first: the figures then say how many)."""
    url = c.manager.replace("http://", "tcp://")
    local = threading.local()
    lat: list[tuple[float, float]] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    t_start = time.monotonic()

    def one(_: int) -> None:
        if time.monotonic() - t_start > timeout:
            return
        if not hasattr(local, "api"):
            local.api = docker.APIClient(base_url=url, version="1.41", timeout=120)
        t0 = time.monotonic()
        try:
            created = local.api.create_container(IMAGE, CMD)
            local.api.start(created["Id"])
        except (docker.errors.DockerException, requests.RequestException) as e:
            with lock:
                errors[f"{type(e).__name__}: {str(e)[:140]}"] += 1
            return
        with lock:
            lat.append((t0 - t_start, time.monotonic() - t0))

    cpu, calls = CPU(c.cpu_groups), c.engine_calls()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(total)))
    took = time.monotonic() - t_start
    used = cpu.take()
    calls = c.engine_calls() - calls  # the start is proxied, not counted: the manager's own calls
    xs = [d for _, d in lat]
    tenth = max(1, len(lat) // 10)
    by_start = [d for _, d in sorted(lat)]
    return {
        "n": len(lat),
        "seconds": took,
        "per_s": len(lat) / took,
        "latency": ms(xs),
        "first_tenth": ms(by_start[:tenth]),
        "last_tenth": ms(by_start[-tenth:]),
        "errors": dict(errors),
        "cpu": used,
        "manager_cpu_ms_per_run": used["manager"] * took / max(1, len(lat)) * 1000,
        "registry_cpu_ms_per_run": used["registry"] * took / max(1, len(lat)) * 1000,
        "engine_calls_per_run": calls / max(1, len(lat)),
    }


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def http_timed(session: requests.Session, url: str) -> tuple[float, Any]:
    t = time.perf_counter()
    r = session.get(url, timeout=120)
    body = r.content
    took = time.perf_counter() - t
    r.raise_for_status()
    return took, json.loads(body)


def reads(c: Cluster, runs: int, ps_runs: int, total: int) -> dict[str, Any]:
    host = c.manager.replace("http://", "tcp://")
    engine = next(iter(c.engines.values()))
    s = requests.Session()
    out: dict[str, Any] = {}
    cli_runs = [timed([DOCKER, "-H", host, "run", "-d", IMAGE, *CMD]) for _ in range(runs)]
    direct = [timed([DOCKER, "-H", engine, "run", "-d", IMAGE, *CMD]) for _ in range(runs)]
    ids = subprocess.run([DOCKER, "-H", engine, "ps", "-q", "-n", str(runs)], capture_output=True, text=True)
    subprocess.run([DOCKER, "-H", engine, "rm", "-f", *ids.stdout.split()], capture_output=True)
    out["cli_run"], out["cli_run_direct"] = ms(cli_runs), ms(direct)
    timed([DOCKER, "-H", host, "info"])
    out["cli_info"] = ms([timed([DOCKER, "-H", host, "info"]) for _ in range(runs)])
    out["cli_info_direct"] = ms([timed([DOCKER, "-H", engine, "info"]) for _ in range(runs)])
    out["http_info"] = ms([http_timed(s, f"{c.manager}/v1.41/info")[0] for _ in range(runs)])
    rows = len(http_timed(s, f"{c.manager}/v1.41/containers/json?all=1")[1])
    out["rows"] = rows
    out["http_ps"] = ms(
        [http_timed(s, f"{c.manager}/v1.41/containers/json?all=1")[0] for _ in range(ps_runs)]
    )
    out["cli_ps"] = ms([timed([DOCKER, "-H", host, "ps", "-a"]) for _ in range(ps_runs)])
    out["cli_ps_direct"] = ms([timed([DOCKER, "-H", engine, "ps", "-a"]) for _ in range(ps_runs)])
    one, baseline = one_engine_holding(c.procs, rows)
    out["cli_ps_one_engine"] = ms([timed([DOCKER, "-H", one, "ps", "-a"]) for _ in range(ps_runs)])
    listed = f"{one.replace('tcp://', 'http://')}/v1.41/containers/json?all=1"
    out["http_ps_one_engine"] = ms([http_timed(s, listed)[0] for _ in range(ps_runs)])
    c.procs.stop(baseline)  # not counted in the idle phase's CPU
    # the dashboard's poll: a summary of every node and its first page of node cards
    out["overview"] = ms([http_timed(s, f"{c.manager}/shoal/v1/overview")[0] for _ in range(runs)])
    return out


def one_engine_holding(procs: Procs, rows: int) -> tuple[str, Proc]:
    """One more simulated engine, alone in its process, holding `rows` created containers: what the
    docker CLI itself takes to read and print that many rows, the floor under `docker ps -a` through the
    manager (a dockerd with 30,000 containers cannot run here)."""
    argv = [PY, "-m", "shoal.sim.engines", "--nodes", "1", "--prefix", "base"]
    p = procs.start("ps-baseline", argv, stdout=True)
    url = next(iter(json.loads(p.line(60)).values()))
    local = threading.local()

    def create(_: int) -> None:
        if not hasattr(local, "api"):
            local.api = docker.APIClient(base_url=url, version="1.41", timeout=120)
        local.api.create_container(IMAGE, CMD)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(create, range(rows)))
    return url, p


def idle(c: Cluster, settle: float, seconds: float) -> dict[str, Any]:
    time.sleep(settle)
    cpu = CPU(c.cpu_groups)
    rss = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        rss.append(rss_mb(c.mgr.pid))
        time.sleep(1)
    return {
        "cpu": cpu.take(),
        "manager_rss_mb": max(rss),
        "registry_rss_mb": rss_mb(c.reg.pid),
        "engines_rss_mb": sum(rss_mb(p.pid) for p in c.engine_procs),
        "agents_rss_mb": sum(rss_mb(p.pid) for p in c.agent_procs),
        "load": os.getloadavg(),
    }


def critical_agents(c: Cluster) -> int:
    checks = requests.get(f"{c.registry}/v1/health/checks/shoal-agent", timeout=60).json()
    return sum(1 for x in checks if x["Status"] != "passing")


def publishing(c: Cluster, interval: float, settle: float, seconds: float) -> dict[str, Any]:
    c.agents_say(f"interval {interval:g}")
    time.sleep(settle)
    c.agents_say("stats")  # a window of its own from here
    i0, cpu = c.keys_written(), CPU(c.cpu_groups)
    critical = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(min(5.0, max(0.0, t_end - time.monotonic())))
        critical.append(critical_agents(c))
    used, i1 = cpu.take(), c.keys_written()
    stats = c.agents_say("stats")
    published = sum(s["published"] for s in stats)
    errors: Counter[str] = Counter()
    for s in stats:
        errors.update(s["errors"])
    return {
        "interval": interval,
        "published_per_s": published / used["seconds"],
        "wanted_per_s": c.nodes / interval,
        "writes_per_s": (i1 - i0) / used["seconds"],
        "publish_ms": [s["publish_ms"] for s in stats],
        "late_ms": [s["late_ms"] for s in stats],
        "errors": dict(errors),
        "critical_max": max(critical),
        "cpu": used,
        "load": os.getloadavg(),
    }


def fact_to_placement(c: Cluster, samples: int, give_up: float = 30.0) -> dict[str, Any]:
    """A fact set on one node's agent (published at once, as a changed facts.d file is), then creates
    asking for it until one is placed; a sample that takes over `give_up` seconds counts as missed."""
    node = sorted(c.engines)[c.nodes // 2]
    agents = c.agent_of[node]
    api = docker.APIClient(base_url=c.manager.replace("http://", "tcp://"), version="1.41", timeout=120)
    lat, tries, missed = [], [], 0
    try:
        for i in range(samples):
            time.sleep(0.37 * (i % 3))  # land at different points of the agents' interval
            tag = f"r{i}-{os.getpid()}"
            t0 = time.perf_counter()
            agents.ask(f"fact {node} benchround={tag}")
            n = 0
            while time.perf_counter() - t0 < give_up:
                n += 1
                try:
                    created = api.create_container(IMAGE, CMD, environment=[f"constraint:benchround=={tag}"])
                except docker.errors.APIError:
                    time.sleep(0.01)
                    continue
                lat.append(time.perf_counter() - t0)
                tries.append(n)
                api.remove_container(created["Id"], force=True)
                break
            else:
                missed += 1
    finally:
        agents.ask(f"fact {node}")
        api.close()
    return {"node": node, "latency": ms(lat or [give_up]), "tries_max": max(tries or [0]), "missed": missed}


# --- one size, the report ----------------------------------------------------------------------------


def one_size(n: int, per_node: int, args: argparse.Namespace, profiler_dir: Path | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"shoal-scale-{n}-"))
    procs = Procs(work)
    out: dict[str, Any] = {"nodes": n, "per_node": per_node, "work": str(work)}
    try:
        print(f"\n== {n} nodes x {per_node} containers (logs in {work}); load {_load()}")
        c = bring_up(n, procs, work, args)
        out["up"] = c.up
        prof = Profiler(profiler_dir / str(n) if profiler_dir else None, procs)
        targets = {"manager": c.mgr, "registry": c.reg}
        total = n * per_node
        cli = min(args.runs, total)
        gc: dict[str, Any] = out.setdefault("gc", {})
        with prof.phase("fill", targets), gc_phase(c, "fill", gc):
            out["fill"] = f = fill(c, total - cli, args.fill_timeout)
        say(
            f"fill: {f['n']} runs in {f['seconds']:.0f} s ({f['per_s']:.0f}/s), {CLIENTS} clients: "
            + fmt(f["latency"]),
            f"p99 of the first tenth {f['first_tenth']['p99']:.0f} ms, the last {f['last_tenth']['p99']:.0f}",
            f"CPU a run: manager {f['manager_cpu_ms_per_run']:.1f} ms, registry "
            f"{f['registry_cpu_ms_per_run']:.1f} ms; the manager's engine calls a run "
            f"{f['engine_calls_per_run']:.1f} (the proxied start not counted)",
            f"errors {f['errors'] or 0}",
        )
        with gc_phase(c, "reads", gc):
            out["reads"] = r = reads(c, cli, args.ps_runs, total)
        say(
            f"docker CLI run -d (sequential, full cluster): {fmt(r['cli_run'])}",
            f"the same CLI straight to one engine {fmt(r['cli_run_direct'])}",
        )
        say(
            f"docker info CLI {fmt(r['cli_info'])}",
            f"GET /info {fmt(r['http_info'])}",
            f"CLI to one engine {fmt(r['cli_info_direct'])}",
        )
        say(
            f"docker ps -a ({r['rows']} rows) CLI {fmt(r['cli_ps'])}",
            f"GET /containers/json?all=1 {fmt(r['http_ps'])}",
            f"CLI to one engine ({per_node} rows) {fmt(r['cli_ps_direct'])}",
            f"CLI to one engine holding {r['rows']} {fmt(r['cli_ps_one_engine'])}",
            f"its GET {fmt(r['http_ps_one_engine'])}",
        )
        say(f"dashboard overview (first page of node cards) {fmt(r['overview'])}")
        with prof.phase("idle", targets), gc_phase(c, "idle", gc):
            out["idle"] = i = idle(c, args.settle, args.idle_seconds)
        say(
            f"idle ({args.agent_interval:g} s agent interval): manager RSS {i['manager_rss_mb']:.0f} MB, "
            f"CPU {100 * i['cpu']['manager']:.1f}% of a core",
            f"registry {100 * i['cpu']['registry']:.1f}% ({i['registry_rss_mb']:.0f} MB)",
            f"engines {100 * i['cpu']['engines']:.1f}% ({i['engines_rss_mb']:.0f} MB)",
            f"agents {100 * i['cpu']['agents']:.1f}% ({i['agents_rss_mb']:.0f} MB)",
            f"healthy nodes {healthy_nodes(c.manager)[1]}, 'engine unreachable' marks so far "
            f"{c.unreachable_marks()}",
        )
        out["fact_idle"] = ft = fact_to_placement(c, args.fact_samples)
        say(
            f"fact change on {ft['node']} -> next placement (agents at {args.agent_interval:g} s): "
            + fmt(ft["latency"]),
            f"missed (> 30 s) {ft['missed']}",
        )
        with prof.phase("publish", targets), gc_phase(c, "publish", gc):
            out["publish"] = w = publishing(c, 1.0, args.settle, args.publish_seconds)
        say(
            f"publish at 1 s: {w['published_per_s']:.0f} publishes/s of {w['wanted_per_s']:.0f} wanted",
            f"{w['writes_per_s']:.0f} keys written/s",
            f"at most {w['critical_max']} checks not passing",
            f"publish {w['publish_ms']}, late {w['late_ms']}, errors {w['errors'] or 0}",
            "CPU " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in w["cpu"].items() if k != "seconds"),
        )
        out["fact"] = ft = fact_to_placement(c, args.fact_samples)
        say(
            f"fact change on {ft['node']} -> next placement (agents at 1 s): {fmt(ft['latency'])}",
            f"missed (> 30 s) {ft['missed']}",
            f"'engine unreachable' marks so far {c.unreachable_marks()}",
        )
        out["manager_rss_end_mb"] = rss_mb(c.mgr.pid)
    finally:
        procs.close()
    for db in work.glob("registry.db*"):  # the store (and its -wal, -shm) is the bulk; the logs stay
        db.unlink(missing_ok=True)
    return out


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def say(*parts: str) -> None:
    """One phase's figures, with the machine's load average beside them."""
    print("  " + "; ".join([*parts, f"load {_load()}"]), flush=True)


def report(results: list[dict[str, Any]]) -> None:
    sizes = [r["nodes"] for r in results]
    head = "".join(f"{f'{n} nodes':>16}" for n in sizes)
    print(f"\n{'figure':<46}{head}  {'goal':<24}classic Swarm (1,000 nodes)")

    def row(name: str, get: Callable[[dict[str, Any]], float], goal: str = "", swarm: str = "—",
            unit: str = "ms") -> None:  # fmt: skip
        vals = "".join(f"{get(r):>13.1f} {unit:<2}" for r in results)
        print(f"{name:<46}{vals}  {goal:<24}{swarm}")

    row("docker run -d, 16 clients, p50", lambda r: r["fill"]["latency"]["p50"], "", "230 ms")
    row("docker run -d, 16 clients, p90", lambda r: r["fill"]["latency"]["p90"], "", "250 ms")
    row(
        "docker run -d, 16 clients, p99",
        lambda r: r["fill"]["latency"]["p99"],
        "<= 100 ms at 1,000",
        "400 ms",
    )
    row("docker run -d, CLI sequential, p50", lambda r: r["reads"]["cli_run"]["p50"], "", "230 ms")
    row("docker run -d, CLI sequential, p99", lambda r: r["reads"]["cli_run"]["p99"], "<= 100 ms", "400 ms")
    row("  (the CLI straight to one engine, p50)", lambda r: r["reads"]["cli_run_direct"]["p50"])
    row("fill rate", lambda r: r["fill"]["per_s"], "", "—", "/s")
    row("docker info, CLI, p50", lambda r: r["reads"]["cli_info"]["p50"], "", "150 ms")
    row("docker info, CLI, p99", lambda r: r["reads"]["cli_info"]["p99"], "<= 100 ms", "360 ms")
    row("GET /info, p99", lambda r: r["reads"]["http_info"]["p99"], "<= 100 ms", "360 ms")
    row("docker ps -a, CLI, p99", lambda r: r["reads"]["cli_ps"]["p99"], "<= 500 ms")
    row("  (the CLI to one engine with as many, p99)", lambda r: r["reads"]["cli_ps_one_engine"]["p99"])
    row("GET /containers/json?all=1, p99", lambda r: r["reads"]["http_ps"]["p99"], "<= 500 ms")
    row("dashboard overview, p99", lambda r: r["reads"]["overview"]["p99"], "<= 200 ms")
    row("manager RSS at idle", lambda r: r["idle"]["manager_rss_mb"], "<= 500 MB", "—", "MB")
    row("manager CPU at idle", lambda r: 100 * r["idle"]["cpu"]["manager"], "<= 10% of a core", "—", "%")
    row("registry CPU at idle", lambda r: 100 * r["idle"]["cpu"]["registry"], "", "—", "%")
    row("publishes/s at 1 s interval", lambda r: r["publish"]["published_per_s"], "= nodes/s", "—", "/s")
    row("registry keys written/s then", lambda r: r["publish"]["writes_per_s"], "", "—", "/s")
    row("checks not passing then (max)", lambda r: r["publish"]["critical_max"], "0", "—", "")
    row("manager CPU then", lambda r: 100 * r["publish"]["cpu"]["manager"], "", "—", "%")
    row("registry CPU then", lambda r: 100 * r["publish"]["cpu"]["registry"], "", "—", "%")
    row("fact change -> placement, p50", lambda r: r["fact_idle"]["latency"]["p50"], "")
    row("fact change -> placement, max", lambda r: r["fact_idle"]["latency"]["max"], "<= 1000 ms")
    row("  the same, agents at 1 s, p50", lambda r: r["fact"]["latency"]["p50"], "")
    row("  the same, agents at 1 s, max", lambda r: r["fact"]["latency"]["max"], "(machine saturated)")
    if len(results) > 1:
        a, b = results[0], results[-1]
        grow = b["nodes"] / a["nodes"]
        print(
            f"\ngrowth {a['nodes']} -> {b['nodes']} nodes ({grow:g}x the nodes; goal: each cost <= {grow:g}x)"
        )
        costs: dict[str, Callable[[dict[str, Any]], float]] = {
            "manager CPU per docker run (fill)": lambda r: r["fill"]["manager_cpu_ms_per_run"],
            "docker run -d p50 (fill)": lambda r: r["fill"]["latency"]["p50"],
            "GET /info p50": lambda r: r["reads"]["http_info"]["p50"],
            "GET /containers/json p50 a row": lambda r: r["reads"]["http_ps"]["p50"] / r["reads"]["rows"],
            "manager CPU at idle": lambda r: r["idle"]["cpu"]["manager"],
            "manager RSS at idle": lambda r: r["idle"]["manager_rss_mb"],
            "manager CPU at 1 s publishing": lambda r: r["publish"]["cpu"]["manager"],
            "registry CPU at 1 s publishing": lambda r: r["publish"]["cpu"]["registry"],
        }  # fmt: skip
        for name, get in costs.items():
            x, y = get(a), get(b)
            ratio = y / x if x else float("inf")
            print(f"  {name:<44}{ratio:>8.2f}x  {'<= linear' if ratio <= grow else 'WORSE than linear'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="100,1000", help="cluster sizes, comma-separated")
    ap.add_argument("--per-node", type=int, default=30, help="containers a node when full")
    ap.add_argument("--quick", action="store_true", help="100 and 300 nodes x 10: a sanity run")
    ap.add_argument(
        "--agent-interval", type=float, default=5.0, help="the agents' interval outside the 1 s phase"
    )
    ap.add_argument("--engine-latency-ms", type=float, default=1.0, help="each simulated engine call's delay")
    ap.add_argument("--runs", type=int, default=20, help="sequential CLI runs and info reads")
    ap.add_argument("--ps-runs", type=int, default=10, help="ps -a reads")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds before idle and publish windows")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument("--publish-seconds", type=float, default=30.0)
    ap.add_argument("--fact-samples", type=int, default=10)
    ap.add_argument("--up-timeout", type=float, default=300.0, help="seconds to wait for every node healthy")
    ap.add_argument("--fill-timeout", type=float, default=1800.0, help="stop filling after this long")
    ap.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="py-spy the manager and registry"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    args = ap.parse_args()
    sizes = [100, 300] if args.quick else [int(x) for x in args.nodes.split(",")]
    per_node = 10 if args.quick else args.per_node
    if shutil.which(DOCKER) is None:
        raise SystemExit("needs the docker CLI on PATH")

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # the finally blocks kill every process group

    signal.signal(signal.SIGTERM, stop)
    print(f"scale benchmark: sizes {sizes} x {per_node}; {os.cpu_count()} CPUs; load {_load()}")
    results = []
    for n in sizes:
        results.append(one_size(n, per_node, args, args.profile))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
    report(results)


if __name__ == "__main__":
    main()
