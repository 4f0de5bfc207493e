"""Core facts, gathered in-process from /proc, /sys and psutil, named and shaped as Facter 4's legacy
flat facts (so a constraint written for Facter reads the same here).

Facter's own rules are kept where they matter: `architecture` is the Debian name (amd64) on the
Debian family and `uname -m` elsewhere; `operatingsystemrelease` on Debian is /etc/debian_version;
`memorysize_mb` is MemTotal in MiB as a float and `memoryfree_mb` is MemAvailable. Where Facter
leaves a fact out, shoal still answers what a user expects: `selinux_enforced` is false without
SELinux, and `virtual`/`is_virtual` come from containers markers, DMI, /sys/hypervisor and cpuid.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import psutil

Facts = dict[str, Any]

_OS_NAMES = {
    "debian": "Debian", "ubuntu": "Ubuntu", "centos": "CentOS", "rhel": "RedHat", "fedora": "Fedora",
    "rocky": "Rocky", "almalinux": "AlmaLinux", "ol": "OracleLinux", "amzn": "Amazon", "sles": "SLES",
    "opensuse-leap": "OpenSuSE", "alpine": "Alpine", "arch": "Archlinux", "linuxmint": "LinuxMint",
}  # fmt: skip
_FAMILIES = {
    "Debian": "Debian", "Ubuntu": "Debian", "LinuxMint": "Debian", "CentOS": "RedHat", "RedHat": "RedHat",
    "Fedora": "RedHat", "Rocky": "RedHat", "AlmaLinux": "RedHat", "OracleLinux": "RedHat", "Amazon": "RedHat",
    "SLES": "Suse", "OpenSuSE": "Suse", "Alpine": "Alpine", "Archlinux": "Archlinux",
}  # fmt: skip
_DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "armv7l": "armhf", "ppc64le": "ppc64el"}
_DMI_VIRTUAL = [  # (substring of product/vendor, Facter's `virtual` value)
    ("VirtualBox", "virtualbox"), ("VMware", "vmware"), ("KVM", "kvm"), ("QEMU", "kvm"), ("Bochs", "bochs"),
    ("HVM domU", "xenhvm"), ("Xen", "xenhvm"), ("Virtual Machine", "hyperv"), ("Google", "gce"),
    ("OpenStack", "openstack"), ("Parallels", "parallels"), ("Amazon EC2", "kvm"),
]  # fmt: skip


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def os_release() -> dict[str, str]:
    out = {}
    for line in _read("/etc/os-release").splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v.strip().strip('"')
    return out


def human_memory(mib: float) -> str:
    """Facter's memory strings: "23.54 GiB" (the simulated agents write theirs with it too)."""
    for unit, size in (("TiB", 1024**2), ("GiB", 1024), ("MiB", 1)):
        if mib >= size:
            return f"{mib / size:.2f} {unit}"
    return f"{mib * 1024:.2f} KiB"


def _meminfo() -> dict[str, float]:
    out = {}
    for line in _read("/proc/meminfo").splitlines():
        k, _, v = line.partition(":")
        parts = v.split()
        if parts:
            out[k] = float(parts[0]) / 1024.0  # kB -> MiB
    return out


def virtual() -> tuple[str, bool]:
    """Facter's `virtual` and `is_virtual`."""
    # as Facter: PID 1's cgroup or environment, not /.dockerenv, which images carry into VMs too
    if "docker" in _read("/proc/1/cgroup") or "container=docker" in _read("/proc/1/environ"):
        return "docker", True
    container = _read("/run/systemd/container")
    if container:
        return container, True
    dmi = " ".join(_read(f"/sys/class/dmi/id/{f}") for f in ("product_name", "sys_vendor", "bios_vendor"))
    for needle, name in _DMI_VIRTUAL:
        if needle in dmi:
            return name, True
    hyp = _read("/sys/hypervisor/type")
    if hyp == "xen":
        return (
            "xen0"
            if Path("/proc/xen/capabilities").exists() and "control_d" in _read("/proc/xen/capabilities")
            else "xenu"
        ), True
    cpuinfo_flags = next(
        (line for line in _read("/proc/cpuinfo").splitlines() if line.startswith("flags")), ""
    )
    if " hypervisor" in cpuinfo_flags:  # cpuid's hypervisor bit: which one, from the clock it offers
        clocks = _read("/sys/devices/system/clocksource/clocksource0/available_clocksource")
        if "kvm-clock" in clocks:
            return "kvm", True
        if "hyperv" in clocks:
            return "hyperv", True
        if "xen" in clocks:
            return "xenhvm", True
        return "virtual", True
    return "physical", False


def _primary_interface() -> str:
    for line in _read("/proc/net/route").splitlines()[1:]:
        f = line.split()
        if len(f) > 2 and f[1] == "00000000":
            return f[0]
    return ""


def _domain(hostname: str) -> str:
    if "." in hostname:
        return hostname.split(".", 1)[1]
    for line in _read("/etc/resolv.conf").splitlines():
        f = line.split()
        if len(f) > 1 and f[0] in ("domain", "search"):
            return f[1]
    return ""


def gather() -> Facts:
    """Every core fact; each read is local and cheap (goal: all of them in well under 50 ms)."""
    uname = platform.uname()
    osr = os_release()
    os_name = _OS_NAMES.get(osr.get("ID", ""), osr.get("NAME", uname.system))
    family = _FAMILIES.get(os_name, os_name)
    release = (
        _read("/etc/debian_version")
        if family == "Debian" and os_name == "Debian"
        else osr.get("VERSION_ID", "")
    )
    mem = _meminfo()
    hostname_full = socket.gethostname()
    hostname = hostname_full.split(".")[0]
    domain = _domain(hostname_full)
    virt, is_virtual = virtual()
    selinux = Path("/sys/fs/selinux/enforce").exists()
    cpus = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    models = [
        line.split(":", 1)[1].strip()
        for line in _read("/proc/cpuinfo").splitlines()
        if line.startswith("model name")
    ]
    physical_ids = {
        line.split(":", 1)[1].strip()
        for line in _read("/proc/cpuinfo").splitlines()
        if line.startswith("physical id")
    }
    load = os.getloadavg()
    facts: Facts = {
        "architecture": _DEB_ARCH.get(uname.machine, uname.machine) if family == "Debian" else uname.machine,
        "hardwaremodel": uname.machine,
        "is_virtual": is_virtual,
        "virtual": virt,
        "selinux": selinux,
        "selinux_enforced": selinux and _read("/sys/fs/selinux/enforce") == "1",
        "kernel": uname.system,
        "kernelrelease": uname.release,
        "kernelversion": uname.release.split("-")[0],
        "kernelmajversion": ".".join(uname.release.split("-")[0].split(".")[:2]),
        "operatingsystem": os_name,
        "operatingsystemrelease": release,
        "operatingsystemmajrelease": release.split(".")[0] if release else "",
        "osfamily": family,
        "hostname": hostname,
        "fqdn": f"{hostname}.{domain}" if domain else hostname,
        "processorcount": cpus,
        "physicalprocessorcount": len(physical_ids) or 1,
        "memorysize_mb": mem.get("MemTotal", 0.0),
        "memoryfree_mb": mem.get("MemAvailable", mem.get("MemFree", 0.0)),
        "memorysize": human_memory(mem.get("MemTotal", 0.0)),
        "memoryfree": human_memory(mem.get("MemAvailable", 0.0)),
        "swapsize_mb": mem.get("SwapTotal", 0.0),
        "swapfree_mb": mem.get("SwapFree", 0.0),
        "uptime_seconds": int(float(_read("/proc/uptime").split()[0] or 0)),
        "load_averages.1m": round(load[0], 2),
        "load_averages.5m": round(load[1], 2),
        "load_averages.15m": round(load[2], 2),
        "timezone": time.strftime("%Z"),
    }
    if domain:
        facts["domain"] = domain
    for i, model in enumerate(models):
        facts[f"processor{i}"] = model
    facts.update(_network())
    return facts


def _network() -> Facts:
    """The primary interface's address, netmask, network and MAC, as Facter's legacy facts name them."""
    import ipaddress

    addrs = psutil.net_if_addrs()
    primary = _primary_interface() or next((n for n in addrs if n != "lo"), "")
    facts: Facts = {"interfaces": ",".join(sorted(addrs))}
    for snic in addrs.get(primary, []):
        if snic.family == socket.AF_INET and "ipaddress" not in facts:
            facts["ipaddress"] = snic.address
            if snic.netmask:
                facts["netmask"] = snic.netmask
                facts["network"] = str(
                    ipaddress.ip_network(f"{snic.address}/{snic.netmask}", strict=False).network_address
                )
        elif snic.family == psutil.AF_LINK:
            facts["macaddress"] = snic.address
    return facts
