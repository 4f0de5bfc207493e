"""The README's walkthrough, run exactly as printed (demo/walkthrough.py reads the README's block), on a
cluster of its own; then the dashboard it ends with, in a real browser (Debian's chromium, headless)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, env_of

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
ENV = {"SHOAL_DEV_NAME": "acc", "SHOAL_DEV_SUBNET": "10.99.40.0/24", "SHOAL_DEV_ROOT": str(ROOT)}
GATEWAY = "10.99.40.1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args], capture_output=True, text=True, env={**os.environ, **ENV}
    )


@pytest.fixture(scope="module")
def walkthrough():
    _shoal("dev", "down")
    try:
        t0 = time.monotonic()
        run = subprocess.run(
            [sys.executable, str(REPO / "demo" / "walkthrough.py")],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **ENV},
        )
        took = time.monotonic() - t0
        print(f"walkthrough took {took:.1f}s")
        yield run, ANSI.sub("", run.stdout)
    finally:
        _shoal("dev", "down")


def _after(out: str, command: str) -> str:
    """What a command printed: the text between its `$ command` line and the next `$ ` or heading."""
    start = out.index(f"$ {command}\n") + len(command) + 3
    rest = out[start:]
    end = min([i for i in (rest.find("\n$ "), rest.find("\n# ")) if i >= 0] or [len(rest)])
    return rest[:end].strip()


def test_every_step_of_the_walkthrough_succeeds(walkthrough):
    run, out = walkthrough
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "# 4. The database, the TODO application" in out  # every heading printed, in order
    nodes = _after(out, "shoal nodes")
    assert all(f"node{i}" in nodes for i in (1, 2, 3)) and nodes.count("passing") == 3


def test_step_1_places_by_the_seeds_constraints(walkthrough):
    _, out = walkthrough
    why = _after(out, "shoal why seed-redis")
    assert re.match(r"seed-redis → node[123]", why)
    assert "constraint:system_overload_10min==/[0-2][0-5]/" in why and "constraint:virtual==" in why
    ps = _after(
        out, "docker ps --format '{{.Names}} on {{.Label \"com.docker.swarm.constraints\"}}: {{.Status}}'"
    )
    assert re.search(r"node\d/seed-redis on .*: Up", ps) and re.search(
        r"node\d/seed-redis-numeric on .*<25.*: Up", ps
    )


def test_steps_2_and_3_compose_with_the_flocker_driver_and_constraints(walkthrough):
    _, out = walkthrough
    assert "gold_redis_1" in _after(out, "docker-compose -f demo/compose/gold/docker-compose.yml -p gold ps")
    why = _after(out, "shoal why picky_redis_1")
    assert (
        "constraint:docker_volume_drivers==*flocker*" in why and "constraint:system_overload_1min<50" in why
    )


def test_step_4_the_snapshot_database_holds_the_items_as_of_the_snapshot(walkthrough):
    _, out = walkthrough
    mounts = _after(out, "docker inspect --format='{{.Mounts}}' MySQL")
    assert re.search(r"demoVol@gold /flocker/[0-9a-f-]{36} /data flocker", mounts)
    placed = _after(out, "docker inspect -f '{{.Name}} is on {{.Node.Name}}' MySQL MySQL-snap").splitlines()
    assert placed[0].split()[-1] == placed[1].split()[-1]  # the affinity and the snapshot agree
    lists = out.split('$ curl -s "$TODO?format=text"\n')
    assert lists[1].split("\n$ ")[0].strip().splitlines() == ["buy milk", "write the report"]
    assert lists[2].split("\n$ ")[0].strip().splitlines() == [
        "buy milk",
        "write the report",
        "added after the snapshot",
    ]
    assert _after(out, 'curl -s "$TODO_SNAP?format=text"').splitlines() == ["buy milk", "write the report"]
    assert f"dashboard: https://{GATEWAY}:2376/dashboard" in out


def test_the_dashboard_shows_nodes_containers_datasets_and_decisions(walkthrough, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        env = {**os.environ, **env_of(_shoal("dev", "env").stdout)}
        certs = Path(env["DOCKER_CERT_PATH"])
        try:
            # the dashboard is behind the Docker API's mutual TLS: the browser shows the admin certificate
            # (the page's own certificate is the cluster CA's, which this fresh browser profile does not know)
            context = browser.new_context(
                viewport={"width": 1400, "height": 1600},
                ignore_https_errors=True,
                client_certificates=[
                    {
                        "origin": f"https://{GATEWAY}:2376",
                        "certPath": str(certs / "cert.pem"),
                        "keyPath": str(certs / "key.pem"),
                    }
                ],
            )
            page = context.new_page()
            page.goto(env["SHOAL_DASHBOARD"])
            nodes = page.locator(".node")
            expect(nodes).to_have_count(3)
            for i in (1, 2, 3):
                expect(page.locator(f'.node[data-node="node{i}"] .health')).to_have_text("passing")
            for name in ("todolist", "todolist-snap", "MySQL", "MySQL-snap"):
                expect(page.locator(f'.node .container[data-container="{name}"]')).to_contain_text("Up ")
            expect(page.locator('#datasets tr.dataset[data-name="demoVol"]')).to_contain_text("gold")
            expect(page.locator('#datasets tr.dataset[data-name="demoVol-snap"]')).to_contain_text("dataset")
            expect(page.locator("#datasets tr.dataset.snapshot")).to_have_count(1)
            # gold keeps one replica on another node: its row names that node and how far behind it is
            replica = page.locator('#datasets tr.dataset[data-name="demoVol"] .replica')
            expect(replica).to_have_count(1, timeout=30000)
            expect(replica).to_contain_text(re.compile(r"node\d · lag \d+(\.\d)?s"), timeout=30000)
            snap = page.locator('#decisions tr.decision[data-container="MySQL-snap"]')
            expect(snap).to_contain_text("affinity:container==MySQL")
            expect(snap.locator(".rejected")).to_have_count(
                2
            )  # the two nodes without MySQL, each with its reason
            expect(snap).to_contain_text("has no container MySQL")
            expect(page.locator("#checks")).to_contain_text("shoal agent publishing facts")
            # live: a container started now appears without a reload
            subprocess.run(
                ["docker", "run", "-d", "--name", "late-arrival", "busybox", "sleep", "60"],
                env=env,
                check=True,
            )
            expect(page.locator('.container[data-container="late-arrival"]')).to_have_count(1, timeout=5000)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
            keep = REPO / "tests" / "acceptance" / "last-dashboard.png"
            keep.write_bytes(shot.read_bytes())
            # the summary line counts every node; the cards are one page of them, filtered by name
            expect(page.locator("#summary")).to_contain_text("3 nodes · 3 passing")
            expect(page.locator("#page-info")).to_have_text("page 1 of 1 · 3 nodes")
            expect(page.locator("#next-page")).to_be_disabled()
            page.fill("#node-filter", "node2")
            expect(page.locator(".node")).to_have_count(1)
            expect(page.locator(".node")).to_have_attribute("data-node", "node2")
            expect(page.locator("#page-info")).to_have_text('page 1 of 1 · 1 of 3 nodes match "node2"')
            page.fill("#node-filter", "")
            expect(page.locator(".node")).to_have_count(3)
        finally:
            browser.close()


def test_a_browser_without_the_certificate_logs_in_with_the_management_token(walkthrough):
    """The dashboard on the join listener, in a real browser holding no client certificate: a login page
    first; the wrong token is refused there; the management token opens the live dashboard."""
    from playwright.sync_api import expect, sync_playwright

    env = {**os.environ, **env_of(_shoal("dev", "env").stdout)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"https://{GATEWAY}:2377/dashboard")
            page.fill('input[name="token"]', "not-the-token")
            page.click('button[type="submit"]')
            expect(page.locator("body")).to_contain_text("management token")
            expect(page.locator(".node")).to_have_count(0)
            page.fill('input[name="token"]', env["CONSUL_HTTP_TOKEN"])
            page.click('button[type="submit"]')
            expect(page.locator(".node")).to_have_count(3)
            expect(page.locator('.node[data-node="node1"] .health')).to_have_text("passing")
            assert env["CONSUL_HTTP_TOKEN"] not in page.content()
        finally:
            browser.close()
