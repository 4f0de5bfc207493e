"""`shoal agent`: one per node; gathers facts, publishes them, keeps the node's check alive."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import click

from shoal import logs
from shoal.agent import join
from shoal.agent.loop import Agent, AgentConfig
from shoal.errors import BadRequest
from shoal.registry.client import addresses
from shoal.signals import stop_on_signals


def _read_token(path: Path | None, state_dir: Path | None) -> str:
    """The token file is read only while the agent has no credentials (a joined agent needs none)."""
    if path is None or (state_dir is not None and (state_dir / "credentials.json").exists()):
        return ""
    try:
        return path.read_text().strip()
    except OSError as e:
        raise BadRequest(f"cannot read the join token file {path}: {e.strerror}") from None


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise BadRequest(f"--label {v!r} is not KEY=VALUE; e.g. --label disk=ssd")
        out[k] = val
    return out


@click.command()
@click.option(
    "--manager",
    required=True,
    envvar="CONSUL_HTTP_ADDR",
    help="With --join (or once joined): the managers' join listeners, https://MANAGER:2377, several "
    "separated by commas (the agent joins through the first that answers and moves to another when one "
    "dies). Without: the registry (Consul API) itself, HOST:PORT or URL, or a comma-separated list of them, "
    "on plain clusters.",
)
@click.option(
    "--join", "join_token", envvar="SHOAL_JOIN_TOKEN", default="", help="A join token (shoal token create)."
)
@click.option(
    "--join-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the join token from this file (used only if the agent has not joined yet).",
)
@click.option(
    "--registry",
    "registry_override",
    default="",
    help="Publish to this registry (Consul API), or a comma-separated list of them, instead of the one "
    "joining named.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the agent keeps its key, node certificate and registry token once joined "
    "(e.g. /var/lib/shoal/agent; needed with --join).",
)
@click.option("--node", default=socket.gethostname().split(".")[0], show_default="this host's name")
@click.option(
    "--engine", default="unix:///var/run/docker.sock", show_default=True, help="This node's dockerd."
)
@click.option(
    "--advertise-engine", default="", help="How the manager reaches the engine [tcp://IPADDRESS:2375]."
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="An agent label (repeatable).")
@click.option(
    "--facts-dir", type=click.Path(path_type=Path), default=Path("/etc/shoal/facts.d"), show_default=True
)
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between publishes.")
@click.option(
    "--fact-timeout",
    type=float,
    default=None,
    show_default="5 or the interval if shorter",
    help="Seconds an executable fact may run.",
)
@click.option("--facter", "use_facter", is_flag=True, help="Merge `facter --json --show-legacy` in.")
@click.option(
    "--state-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the agent keeps its session, to reclaim its node after a crash.",
)
@click.option(
    "--pool",
    type=click.Path(path_type=Path),
    help="Where this node keeps its datasets (serves the volume plugin).",
)
@click.option(
    "--pool-kind", type=click.Choice(["auto", "btrfs", "directory"]), default="auto", show_default=True
)
@click.option("--mount-prefix", type=click.Path(path_type=Path), default=Path("/flocker"), show_default=True)
@click.option(
    "--plugins-dir", type=click.Path(path_type=Path), default=Path("/run/docker/plugins"), show_default=True
)
@click.option(
    "--profiles", "profiles_file", type=click.Path(path_type=Path), help="Storage profiles file (YAML)."
)
@click.option(
    "--load-cgroup",
    default="",
    metavar="PATH",
    help="Measure system_overload_* as this cgroup's CPU use (nodes sharing one kernel), not the loadavg.",
)
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="logfmt", show_default=True)
def agent(
    manager: str,
    node: str,
    engine: str,
    advertise_engine: str,
    labels: tuple[str, ...],
    facts_dir: Path,
    interval: float,
    fact_timeout: float | None,
    use_facter: bool,
    state_file: Path | None,
    pool: Path | None,
    pool_kind: str,
    mount_prefix: Path,
    plugins_dir: Path,
    profiles_file: Path | None,
    load_cgroup: str,
    join_token: str,
    join_token_file: Path | None,
    state_dir: Path | None,
    registry_override: str,
    log_level: str,
    log_format: str,
) -> None:
    """Publish this node's facts to the registry every --interval seconds."""
    logs.setup(log_level, log_format)
    if (join_token or join_token_file) and state_dir is None:
        raise BadRequest("--join needs --state-dir: where the agent keeps what joining gives it")
    if fact_timeout is None:
        fact_timeout = min(5.0, interval)
    if interval <= 0 or fact_timeout <= 0:
        raise BadRequest("--interval and --fact-timeout must be positive numbers of seconds")
    if fact_timeout > interval:
        # the node's check lives 3 intervals; a fact script hanging longer than one would starve it
        raise BadRequest(
            f"--fact-timeout {fact_timeout:g} is longer than --interval {interval:g}; "
            "a hanging fact script would delay publishing: make it at most the interval"
        )
    joins = bool(join_token or join_token_file) or (
        state_dir is not None and join.load(state_dir) is not None
    )
    config = AgentConfig(
        # every address checked here, so a typo in the list is a clear error now, not a retry loop later
        manager=",".join(join.managers(manager) if joins else addresses(manager)),
        node=node,
        engine=engine,
        advertise_engine=advertise_engine,
        labels=_labels(labels),
        facts_dir=facts_dir,
        interval=interval,
        fact_timeout=fact_timeout,
        use_facter=use_facter,
        state_file=state_file,
        pool=pool,
        pool_kind=pool_kind,
        mount_prefix=mount_prefix,
        plugins_dir=plugins_dir,
        profiles_file=profiles_file,
        load_cgroup=load_cgroup,
        join_token=join_token or _read_token(join_token_file, state_dir),
        state_dir=state_dir,
        registry=",".join(addresses(registry_override)) if registry_override else "",
    )
    asyncio.run(_main(config))


async def _main(config: AgentConfig) -> None:
    stop = stop_on_signals()
    async with Agent(config) as a:
        try:
            await a.run(stop)
        finally:
            await a.leave()
