"""The registry's DNS interface, as Consul's: only instances whose checks all pass are answered.

    NAME.service[.DC].DOMAIN         A (instance or node address), SRV (port, target the node)
    TAG.NAME.service[.DC].DOMAIN     the same, for instances with TAG
    _NAME._PROTO.service[.DC].DOMAIN RFC 2782; PROTO "tcp" matches every instance, else it is a tag
    NODE.node[.DC].DOMAIN            A

Parsing a name into a `Query` is pure (`parse_name`); answering runs against the Registry.
UDP answers that would not fit in 512 bytes are truncated (TC) so resolvers retry over TCP.
A packet that is not DNS gets no answer, one whose answer fails gets SERVFAIL, and a TCP client that
goes quiet is dropped after TCP_IDLE seconds: no packet can stop the server answering the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from dataclasses import dataclass

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, SRV, A, DNSRecord

from shoal.logs import kv
from shoal.registry.core import Registry

log = logging.getLogger("shoal.registry.dns")
TTL = 0  # Consul's default: answers are not cached
TCP_IDLE = 10.0


@dataclass(frozen=True, slots=True)
class Query:
    kind: str  # "service" | "node"
    name: str
    tag: str = ""


def parse_name(qname: str, domain: str, datacenter: str) -> Query | None:
    """The lookup a DNS name asks for, or None if it is not one of ours."""
    labels = [label.lower() for label in qname.rstrip(".").split(".")]
    dom = domain.strip(".").lower().split(".")
    if labels[-len(dom) :] != dom:
        return None
    labels = labels[: -len(dom)]
    if len(labels) >= 2 and labels[-1] == datacenter.lower() and labels[-2] in ("service", "node"):
        labels = labels[:-1]
    if not labels or labels[-1] not in ("service", "node"):
        return None
    kind, parts = labels[-1], labels[:-1]
    if kind == "node":
        return Query("node", parts[-1]) if len(parts) == 1 else None
    if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
        name, proto = parts[0][1:], parts[1][1:]
        return Query("service", name, "" if proto == "tcp" else proto)
    if len(parts) == 1:
        return Query("service", parts[0])
    if len(parts) == 2:
        return Query("service", parts[1], parts[0])
    return None


def _addr_rr(name: str, addr: str, qtype: str = "ANY") -> RR | None:
    """The address record of `addr` if the question asks for its family: an A question gets only IPv4
    addresses, AAAA only IPv6 (as Consul: an AAAA question for an IPv4-only node has an empty answer)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    rtype = "A" if ip.version == 4 else "AAAA"
    if qtype not in (rtype, "ANY"):
        return None
    if ip.version == 4:
        return RR(name, QTYPE.A, rdata=A(addr), ttl=TTL)
    return RR(name, QTYPE.AAAA, rdata=AAAA(addr), ttl=TTL)


class DNSServer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def answer(self, request: DNSRecord) -> DNSRecord:
        cfg = self.registry.config
        reply = request.reply()
        q = request.q
        qname, qtype = str(q.qname), QTYPE[q.qtype]
        query = parse_name(qname, cfg.domain, cfg.datacenter)
        soa = RR(
            cfg.domain + ".",
            QTYPE.SOA,
            ttl=TTL,
            rdata=SOA(f"ns.{cfg.domain}.", f"hostmaster.{cfg.domain}.", (1, 3600, 600, 86400, 0)),
        )
        if query is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(soa)
            return reply
        if query.kind == "node":
            node = next((n for n in await self.registry.nodes() if n.name.lower() == query.name), None)
            if node is None:
                reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(soa)
                return reply
            if rr := _addr_rr(qname, node.address, qtype):
                reply.add_answer(rr)
            else:  # the name exists, with no record of that type: NOERROR, the SOA for negative caching
                reply.add_auth(soa)
            return reply
        entries = await self.registry.health_service(query.name, query.tag, passing=True, ignore_case=True)
        if not entries:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(soa)
            return reply
        for e in entries:
            node, svc = e["Node"], e["Service"]
            addr = svc["Address"] or node["Address"]
            if qtype == "SRV":
                target = f"{node['Node']}.node.{cfg.datacenter}.{cfg.domain}."
                reply.add_answer(RR(qname, QTYPE.SRV, rdata=SRV(1, 1, svc["Port"], target), ttl=TTL))
                if rr := _addr_rr(target, addr):
                    reply.add_ar(rr)
            elif rr := _addr_rr(qname, addr, qtype):
                reply.add_answer(rr)
        if not reply.rr:
            reply.add_auth(soa)
        return reply

    async def _handle(self, data: bytes) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        try:
            return (await self.answer(request)).pack()
        except Exception:
            kv(log, "dns answer failed", logging.ERROR, exc_info=True, question=str(request.q.qname)[:255])
        try:
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        except Exception:
            return None

    @staticmethod
    def _truncate(out: bytes) -> bytes:
        if len(out) <= 512:
            return out
        rec = DNSRecord.parse(out)
        rec.ar, rec.header.tc = [], 1
        while True:
            packed = rec.pack()
            if len(packed) <= 512 or len(rec.rr) <= 1:
                return packed
            rec.rr = rec.rr[: len(rec.rr) // 2]

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class UDP(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport  # type: ignore[assignment]

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                async def go() -> None:
                    out = await server._handle(data)
                    if out is None:
                        return
                    with contextlib.suppress(Exception):
                        self.transport.sendto(server._truncate(out), addr)  # type: ignore[attr-defined]

                task = loop.create_task(go())
                server._inflight.add(task)
                task.add_done_callback(server._inflight.discard)

        self._udp, _ = await loop.create_datagram_endpoint(UDP, local_addr=(host, port))

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                while True:
                    (n,) = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))
                    out = await server._handle(await asyncio.wait_for(reader.readexactly(n), TCP_IDLE))
                    if out is None:
                        break
                    writer.write(struct.pack(">H", len(out)) + out)
                    await asyncio.wait_for(writer.drain(), TCP_IDLE)
            writer.close()

        self._tcp = await asyncio.start_server(tcp, host, port)

    async def close(self) -> None:
        if self._udp:
            self._udp.close()
        if self._tcp:
            self._tcp.close()
            await self._tcp.wait_closed()
