"""The operator's controls on a running dev cluster: stop, kill or start one node (its engine and agent),
restart the manager with other flags, and, with several managers, kill or start one manager host (its etcd
member and its manager) — so failure behaviour can be tried and tested while the rest of the cluster stays
up. Each keeps the state file true, so `dev env`, `dev status` and `dev down` stay right."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from shoal.dev import engine, host, state
from shoal.dev.cluster import Out, load
from shoal.dev.layout import ClusterLayout, ManagerLayout, plan_layout
from shoal.dev.node import (
    ProcessSpec,
    cluster_services,
    engine_process,
    manager_processes,
    node_services,
    start,
)
from shoal.errors import Conflict, ShoalError


def node_stop(name: str, root: Path, node: str, kill: bool = False, out: Out = print) -> None:
    """stop: the agent, then the engine (which stops its containers as dockerd does); kill: every process on
    the node at once, containers included, as a power cut would."""
    layout, st = load(name, root)
    n = layout.node(node)
    pids = dict(st.pids.get(node, {}))
    if kill:
        gone = host.netns_pids(n.netns) | host.cgroup_procs(n.cgroup_parent(layout.name))
        gone |= {p for p in pids.values() if host.pid_alive(p) and str(n.dir) in host.cmdline(p)}
        host.kill(gone)
        out(f"{node}: killed {len(gone)} processes (engine, agent, containers)")
    else:
        services = {p for k, p in pids.items() if k != "engine" and host.pid_alive(p)}
        host.terminate(services, grace=5.0)
        stopped = host.terminate({pids["engine"]} if "engine" in pids else set(), grace=30.0)
        out(f"{node}: agent and engine stopped" if stopped else f"{node}: was not running")
    state.write(layout.state_file, replace(st, pids={**st.pids, node: {}}))


def node_start(name: str, root: Path, node: str, out: Out = print) -> None:
    layout, st = load(name, root)
    n = layout.node(node)
    if host.pid_alive(st.pids.get(node, {}).get("engine", -1)):
        raise Conflict(f"{node}'s engine is running already; `shoal dev node stop {node}` first")
    # a killed engine leaves its pidfile and its containerd's; a pid in them that is still a zombie looks
    # alive to dockerd, which then waits for a containerd that will never answer
    for pidfile in (n.pidfile, n.exec_root / "containerd" / "containerd.pid"):
        _clear_stale_pidfile(pidfile)
    spec = engine_process(layout, n)
    pid = start(spec)
    pids = {"engine": pid}
    state.write(layout.state_file, replace(st, pids={**st.pids, node: pids}))
    # The agent starts as soon as the engine's namespaces are made, not once the engine answers: dockerd
    # restoring containers that use shoal volumes waits for the volume plugin the agent serves before its
    # API listens (about 30 s per volume), so waiting for the engine first would wait for ever.
    _wait_exec(pid, "dockerd", n.log_dir / "dockerd.log", node)
    services = node_services(layout, n)
    for svc in services:
        pids[svc.name] = start(svc, join_pid=pid)
        state.write(layout.state_file, replace(st, pids={**st.pids, node: pids}))
    engine.wait_ready(n.engine_socket, pid, n.log_dir / "dockerd.log", node, timeout=600.0)
    for svc in services:
        if svc.ready_url:
            engine.wait_http(
                svc.ready_url,
                pids[svc.name],
                svc.log,
                f"{node} {svc.name}",
                ca=svc.ready_ca,
                cert=svc.ready_cert,
                token_file=svc.ready_token,
                timeout=90.0,  # dockerd retries a volume plugin for ~30 s before it listens (containers using
                # shoal volumes), and only then does the agent start
            )
    out(f"{node}: engine (pid {pid}) and agent started")


def _wait_exec(pid: int, comm: str, log: Path, node: str, timeout: float = 30.0) -> None:
    """Until `pid` runs `comm`: the node's start-up script makes its namespaces and mounts, then execs the
    engine, so only then may another process join them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return
        except OSError:
            raise ShoalError(f"{node}'s engine exited while starting (log: {log})") from None
        time.sleep(0.02)
    raise ShoalError(f"{node}'s engine did not start within {timeout:.0f}s (log: {log})")


def _clear_stale_pidfile(pidfile: Path) -> None:
    """Removes `pidfile` once the pid in it is gone (a zombie counts as gone)."""
    try:
        old = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    host.wait_gone({old}, 5.0)
    if not host.pid_alive(old):
        pidfile.unlink(missing_ok=True)


def manager_restart(name: str, root: Path, strategy: str | None = None, out: Out = print) -> ClusterLayout:
    """The single manager stopped and started again (with another strategy, say); with several, each in turn
    (a rolling restart: the others serve meanwhile), their etcd members left running."""
    layout, st = load(name, root)
    spec = replace(st.spec, strategy=strategy or st.spec.strategy)
    layout = plan_layout(spec)
    if layout.managers:
        for m in layout.managers:
            old = st.pids.get(m.name, {}).get("manager", -1)
            host.terminate({old} if host.pid_alive(old) else set(), grace=10.0)
            [svc] = [s for s in manager_processes(layout, m) if s.name == "manager"]
            pid = start(svc)
            st = replace(st, spec=spec, pids={**st.pids, m.name: {**st.pids.get(m.name, {}), "manager": pid}})
            state.write(layout.state_file, st)
            _wait_ready(svc, pid, m.name)
            out(f"{m.name} restarted (pid {pid}, strategy {spec.strategy}) at {m.docker_host}")
        return layout
    old = st.pids.get("", {}).get("manager", -1)
    host.terminate({old} if host.pid_alive(old) else set(), grace=10.0)
    [svc] = [s for s in cluster_services(layout) if s.name == "manager"]
    pid = start(svc)
    st = replace(st, spec=spec, pids={**st.pids, "": {**st.pids.get("", {}), "manager": pid}})
    state.write(layout.state_file, st)
    if svc.ready_url:
        engine.wait_http(svc.ready_url, pid, svc.log, "cluster manager", ca=svc.ready_ca, cert=svc.ready_cert)
    out(f"manager restarted (pid {pid}, strategy {spec.strategy}) at {layout.docker_host}")
    return layout


def manager_kill(name: str, root: Path, index: int | Sequence[int], out: Out = print) -> None:
    """Manager hosts die: SIGKILL to every process in each one's namespace (its etcd member and its manager)
    at once, as a power cut would; nothing of it is stopped gracefully."""
    layout, st = load(name, root)
    for m in _managers(layout, index):
        pids = st.pids.get(m.name, {})
        gone = host.netns_pids(m.netns) | {p for p in pids.values() if _ours(p, m)}
        host.kill(gone)
        st = replace(st, pids={**st.pids, m.name: {}})
        state.write(layout.state_file, st)
        out(
            f"{m.name}: killed {len(gone)} processes (etcd member, manager)"
            if gone
            else f"{m.name}: was not running"
        )


def manager_start(name: str, root: Path, index: int | Sequence[int], out: Out = print) -> None:
    """Manager hosts come back: each one's etcd member on its data (it rejoins the others); once they answer
    healthy, each one's manager, until its /_ping answers. Several at once when fewer than a quorum of etcd
    members is left: a member alone never answers healthy (it has no majority to elect a leader with)."""
    layout, st = load(name, root)
    managers = _managers(layout, index)
    for m in managers:
        running = [p for p, pid in st.pids.get(m.name, {}).items() if _ours(pid, m)]
        if running:
            raise Conflict(
                f"{m.name}'s {' and '.join(running)} {'is' if len(running) == 1 else 'are'} running already; "
                f"`shoal dev manager kill {m.index}` first"
            )
    hint = _quorum_hint(layout, st, managers)
    for tier in ("etcd", "manager"):
        started = []
        for m in managers:
            [svc] = [s for s in manager_processes(layout, m) if s.name == tier]
            if tier == "etcd":
                host.kill(host.netns_pids(m.netns))  # a stray left in its namespace would hold its ports
            pid = start(svc)
            st = replace(st, pids={**st.pids, m.name: {**st.pids.get(m.name, {}), tier: pid}})
            state.write(layout.state_file, st)
            started.append((m, svc, pid))
        for m, svc, pid in started:
            _wait_ready(svc, pid, m.name, hint if tier == "etcd" else "")
    for m in managers:
        p = st.pids[m.name]
        out(f"{m.name}: etcd member (pid {p['etcd']}) and manager (pid {p['manager']}) at {m.docker_host}")


def _managers(layout: ClusterLayout, index: int | Sequence[int]) -> list[ManagerLayout]:
    indexes = [index] if isinstance(index, int) else list(dict.fromkeys(index))
    return [layout.manager(i) for i in indexes]


def _ours(pid: int, m: ManagerLayout) -> bool:
    return host.pid_alive(pid) and str(m.dir) in host.cmdline(pid)


def _wait_ready(svc: ProcessSpec, pid: int, who: str, hint: str = "") -> None:
    try:
        engine.wait_http(
            svc.ready_url,
            pid,
            svc.log,
            f"{who} {svc.name}",
            ca=svc.ready_ca,
            cert=svc.ready_cert,
            timeout=60.0,
        )
    except ShoalError as e:
        raise ShoalError(f"{e}{hint}") from None


def _quorum_hint(layout: ClusterLayout, st: state.State, starting: list[ManagerLayout]) -> str:
    """Why an etcd member may never answer healthy: a majority of the members must be up to elect with."""
    names = {m.name for m in starting}
    up = [
        o
        for o in layout.managers
        if o.name not in names and _ours(st.pids.get(o.name, {}).get("etcd", -1), o)
    ]
    need, have = len(layout.managers) // 2 + 1, len(up) + len(starting)
    down = [str(m.index) for m in layout.managers if m not in up]
    if have >= need:
        return ""
    return (
        f"; with these, {have} of {len(layout.managers)} etcd members run and etcd needs {need} for a "
        f"quorum: start more at once, e.g. `shoal dev manager start {' '.join(down)}`"
    )
