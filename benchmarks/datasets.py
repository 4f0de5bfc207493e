"""Data services figures:

(1) snapshot of a 1 GB dataset: the btrfs pool (copy-on-write subvolume snapshot) against the directory
    pool (a copy), both through the same Pool.apply and then synced to disk; medians and their ratio
    (goal: btrfs <= 100 ms and >= 20x faster).
(2) create + mount of a new dataset volume through `docker run` via the manager, against the same run
    without a volume, interleaved (goal: <= 200 ms more).

Run as root: `.venv/bin/python benchmarks/datasets.py [--runs 15]`. Uses /var/lib/shoal/bench and a dev
cluster `dsbench` on 10.99.12.0/24, both taken down at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from _bench import ROOT, bench_cluster

from shoal.data.model import Dataset
from shoal.data.plan import Step
from shoal.data.pool import open_pool
from shoal.dev.layout import ClusterSpec

NAME, SUBNET = "dsbench", "10.99.12.0/24"


def _fill(path: Path, mib: int) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
    with open(path / "data.bin", "wb") as f:
        for _ in range(mib):
            f.write(block)
    subprocess.run(["sync"], check=True)


def snapshots(runs: int) -> None:
    img, mnt, plain = ROOT / "ds-pool.img", ROOT / "ds-btrfs", ROOT / "ds-dir"
    ROOT.mkdir(parents=True, exist_ok=True)
    mnt.mkdir(exist_ok=True)
    subprocess.run(["truncate", "-s", "4G", str(img)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        times = {}
        for pool in (open_pool(mnt, "btrfs"), open_pool(plain, "directory")):
            src = Dataset(str(uuid.uuid4()), "src", "gold", "", created=time.time())
            pool.apply(Step("create", src.id, record=src))
            _fill(pool.path(src.id), 1024)
            took = []
            for _ in range(runs if pool.kind == "btrfs" else max(3, runs // 5)):
                snap = Dataset(str(uuid.uuid4()), "", "gold", "", parent=src.id, kind="snapshot")
                t = time.perf_counter()
                pool.apply(Step("snapshot", snap.id, src.id, record=snap))  # its record included
                os.sync()  # durable, both: btrfs commits its snapshot, the copy must reach the disk too
                took.append(time.perf_counter() - t)
                pool.apply(Step("delete", snap.id, record=snap))
            pool.apply(Step("delete", src.id, record=src))
            times[pool.kind] = statistics.median(took)
        b, d = times["btrfs"], times["directory"]
        print(
            f"(1) snapshot of a 1 GB dataset: btrfs median {b * 1000:.1f} ms, directory pool (copy) median "
            f"{d * 1000:.0f} ms -> btrfs {d / b:.0f}x faster (goal: <= 100 ms and >= 20x)"
        )
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        img.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(plain)], check=False)


def create_mount(runs: int) -> None:
    spec = ClusterSpec(name=NAME, nodes=3, subnet=SUBNET, root=ROOT, agent_interval=1.0)
    with bench_cluster(spec) as layout:
        manager = layout.docker_host

        def run(*extra: str) -> float:
            t = time.perf_counter()
            subprocess.run(["docker", "-H", manager, "run", "--rm", *extra, "busybox", "true"], check=True,
                           capture_output=True)  # fmt: skip
            return time.perf_counter() - t

        for _ in range(3):
            run()
        plain, with_volume = [], []
        for _ in range(runs):
            plain.append(run())
            with_volume.append(run("-v", f"v{uuid.uuid4().hex[:8]}@gold:/data", "--volume-driver=flocker"))
        extra = statistics.median(w - p for w, p in zip(with_volume, plain, strict=True))
        print(
            f"(2) docker run --rm busybox true: {statistics.median(plain) * 1000:.0f} ms; with a new dataset "
            f"volume (create + mount) {statistics.median(with_volume) * 1000:.0f} ms; median extra "
            f"{extra * 1000:.0f} ms (goal <= 200 ms)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    snapshots(args.runs)
    create_mount(args.runs)


if __name__ == "__main__":
    main()
