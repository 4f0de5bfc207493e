"""The host-side I/O of a dev cluster: links, namespaces, iptables, mounts, loop devices, processes, cgroups.

Every function here does one thing to the host and is safe to call on something already gone, so
`down` can run the same steps over a healthy cluster, a half-made one and a crashed one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from shoal.errors import ShoalError


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ShoalError(f"`{' '.join(argv)}` failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc


# --- links and namespaces -------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def list_netns() -> list[str]:
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def create_bridge(name: str, gateway: str, prefixlen: int) -> None:
    run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "addr", "add", f"{gateway}/{prefixlen}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_link(name: str) -> bool:
    if not link_exists(name):
        return False
    run(["ip", "link", "del", name], check=False)
    return True


def create_node_net(netns: str, veth: str, bridge: str, address: str, prefixlen: int, gateway: str) -> None:
    """A namespace whose eth0 is one end of a veth; the other end is on the host bridge."""
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    run(["ip", "-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", netns, "route", "add", "default", "via", gateway])


def delete_netns(name: str) -> bool:
    if not netns_exists(name):
        return False
    run(["ip", "netns", "del", name], check=False)
    return True


def netns_pids(name: str) -> set[int]:
    """Every process in the named network namespace (what `ip netns pids` reports)."""
    if not netns_exists(name):
        return set()
    try:
        target = os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return set()
    pids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry.name}/ns/net").st_ino == target:
                    pids.add(int(entry.name))
    return pids


# --- iptables -------------------------------------------------------------------------------------


def _forward_rule(bridge: str, comment: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment", comment, "-j", "ACCEPT"]


def add_forward_rule(bridge: str, comment: str) -> None:
    """Bridged traffic between node namespaces passes the host FORWARD chain (br_netfilter)."""
    if not has_forward_rule(bridge, comment):
        run(["iptables", "-I", *_forward_rule(bridge, comment)])


def has_forward_rule(bridge: str, comment: str) -> bool:
    return run(["iptables", "-C", *_forward_rule(bridge, comment)], check=False).returncode == 0


def remove_forward_rules(comment: str) -> int:
    """Removes every FORWARD rule carrying `comment`, whatever bridge it names."""
    removed = 0
    for line in run(["iptables", "-S", "FORWARD"], check=False).stdout.splitlines():
        if f'--comment "{comment}"' in line or f"--comment {comment}" in line:
            args = line.split()[1:]  # drop "-A"
            args = [a.strip('"') for a in args]
            if run(["iptables", "-D", *args], check=False).returncode == 0:
                removed += 1
    return removed


# --- mounts and loop devices ----------------------------------------------------------------------


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root` in our mount namespace, deepest first."""
    prefix = str(root).rstrip("/")
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount(point: str) -> None:
    if run(["umount", point], check=False).returncode != 0:
        run(["umount", "-l", point], check=False)


def loops_backed_by(prefix: Path) -> list[str]:
    """Loop devices whose backing file lies below `prefix` (sysfs, so deleted files count too)."""
    found = []
    for dev in Path("/sys/block").glob("loop*"):
        with contextlib.suppress(OSError):
            backing = (dev / "loop" / "backing_file").read_text().strip()
            if backing.startswith(str(prefix).rstrip("/") + "/"):
                found.append(f"/dev/{dev.name}")
    return found


def detach_loop(dev: str) -> None:
    run(["losetup", "-d", dev], check=False)


def make_btrfs_pool(image: Path, mountpoint: Path, size: str) -> None:
    image.parent.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(parse_size(size))
    run(["mkfs.btrfs", "-q", str(image)])
    run(["mount", "-o", "loop", str(image), str(mountpoint)])
    run(["btrfs", "quota", "enable", str(mountpoint)], check=False)


def parse_size(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = size.strip().upper().removesuffix("B").removesuffix("I")
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


def kernel_has_btrfs() -> bool:
    try:
        return "btrfs" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


# --- processes ------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0 or -1, 0) would ask about a whole process group, or every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate(pids: set[int], grace: float) -> set[int]:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL what is left; returns the pids that were alive."""
    alive = {p for p in pids if pid_alive(p)}
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    wait_gone(alive, grace)
    kill(alive)
    return alive


def kill(pids: set[int]) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    wait_gone(pids, 5.0)


def wait_gone(pids: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        _reap()
        time.sleep(0.05)
    return not any(pid_alive(p) for p in pids)


def _reap() -> None:
    """Our own children (engines started by this process) must be waited for, or they stay zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


# --- cgroups --------------------------------------------------------------------------------------


def cgroup_roots() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers and the v2 unified tree)."""
    roots = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                roots.append(Path(fields[4]))
    return roots


def cgroup_procs(parent: str) -> set[int]:
    pids: set[int] = set()
    for root in cgroup_roots():
        base = root / parent.strip("/")
        if base.is_dir():
            for procs in base.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroups(parent: str) -> int:
    """rmdir the cgroup tree `parent` in every hierarchy, deepest first; returns how many were removed."""
    removed = 0
    for root in cgroup_roots():
        base = root / parent.strip("/")
        if base.is_dir():
            for d in sorted(
                (p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    d.rmdir()
                    removed += 1
            with contextlib.suppress(OSError):
                base.rmdir()
                removed += 1
    return removed
