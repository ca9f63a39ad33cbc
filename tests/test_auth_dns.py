"""The auth resolver against a real DNS server on loopback: answers, cache, failures, bridge."""

from __future__ import annotations

import asyncio

import pytest

from mailgate.auth.dns import Deadline, DnsTempError, Resolver, parse_nameserver
from tests.support.dns_server import DnsTestServer, SilentUdpPort, dns_server

__all__ = ["dns_server"]


def resolver(dns: DnsTestServer | SilentUdpPort, **kw: float) -> Resolver:
    return Resolver(
        [dns.address], timeout=kw.get("timeout", 1.0), cache_size=int(kw.get("cache", 100))
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize("spec", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:99999", ""])
def test_parse_nameserver_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(spec)


async def test_record_types(dns_server: DnsTestServer) -> None:
    dns_server.add_a("host.example.com", "192.0.2.1")
    dns_server.add_aaaa("host.example.com", "2001:db8::1")
    dns_server.add_mx("example.com", "mx.example.com", 5)
    dns_server.add_ptr("192.0.2.1", "host.example.com")
    dns_server.add_cname("www.example.com", "host.example.com")
    r = resolver(dns_server)
    assert (await r.query("host.example.com", "A")).values() == ["192.0.2.1"]
    assert (await r.query("HOST.example.com.", "AAAA")).values() == ["2001:db8::1"]
    assert (await r.query("example.com", "MX")).values() == [(5, "mx.example.com")]
    ptr = await r.query("1.2.0.192.in-addr.arpa", "PTR")
    assert ptr.values() == ["host.example.com"]
    www = await r.query("www.example.com", "A")
    assert www.values() == ["192.0.2.1"]
    assert www.records[0].rdtype == "CNAME"


async def test_long_txt_is_split_and_joined(dns_server: DnsTestServer) -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 700
    dns_server.add_txt("sel._domainkey.example.com", value)
    r = resolver(dns_server)
    answer = await r.query("sel._domainkey.example.com", "TXT")
    (strings,) = answer.values()
    assert [len(s) for s in strings] == [255, 255, len(value) - 510]
    assert await r.txt("sel._domainkey.example.com") == [value.encode()]


async def test_truncated_udp_answer_falls_back_to_tcp(dns_server: DnsTestServer) -> None:
    for i in range(12):  # > 1232 bytes: truncated over UDP, complete over TCP
        dns_server.add_txt("big.example.com", f"record-{i}-" + "x" * 200)
    r = resolver(dns_server)
    assert len(await r.txt("big.example.com")) == 12


async def test_nxdomain_and_nodata(dns_server: DnsTestServer) -> None:
    dns_server.add_a("a.b.example.com", "192.0.2.1")
    r = resolver(dns_server)
    assert (await r.query("nope.example.com", "A")).rcode == "NXDOMAIN"
    nodata = await r.query("a.b.example.com", "TXT")
    assert (nodata.rcode, nodata.values()) == ("NOERROR", [])
    ent = await r.query("b.example.com", "A")  # empty non-terminal
    assert (ent.rcode, ent.values()) == ("NOERROR", [])
    assert (await r.query("bad..name", "A")).rcode == "NXDOMAIN"


async def test_cache_answers_repeat_queries(dns_server: DnsTestServer) -> None:
    dns_server.add_txt("example.com", "hello")
    r = resolver(dns_server)
    await r.txt("example.com")
    await r.txt("example.com")
    await r.query("missing.example.com", "A")
    await r.query("missing.example.com", "A")  # negative answers are cached too (RFC 2308)
    assert dns_server.queries == [("example.com", "TXT"), ("missing.example.com", "A")]


async def test_zero_cache_size_always_asks(dns_server: DnsTestServer) -> None:
    dns_server.add_txt("example.com", "hello")
    r = resolver(dns_server, cache=0)
    await r.txt("example.com")
    await r.txt("example.com")
    assert len(dns_server.queries) == 2


async def test_concurrent_identical_queries_are_coalesced(dns_server: DnsTestServer) -> None:
    dns_server.add_a("example.com", "192.0.2.1")
    r = resolver(dns_server, cache=0)
    answers = await asyncio.gather(*(r.query("example.com", "A") for _ in range(10)))
    assert {tuple(a.values()) for a in answers} == {("192.0.2.1",)}
    assert len(dns_server.queries) < 10


async def test_servfail_is_temporary(dns_server: DnsTestServer) -> None:
    dns_server.set_servfail("broken.example.com")
    r = resolver(dns_server)
    with pytest.raises(DnsTempError, match="SERVFAIL"):
        await r.query("broken.example.com", "TXT")


async def test_timeout_is_temporary(dns_server: DnsTestServer) -> None:
    dns_server.set_timeout("slow.example.com", "TXT")
    r = resolver(dns_server, timeout=0.2)
    with pytest.raises(DnsTempError, match="timeout"):
        await r.query("slow.example.com", "TXT")


async def test_dead_resolver_is_temporary() -> None:
    with SilentUdpPort() as dead:
        r = resolver(dead, timeout=0.2)
        with pytest.raises(DnsTempError):
            await r.query("example.com", "A")


async def test_bridge_serves_threads_through_the_loop(dns_server: DnsTestServer) -> None:
    dns_server.add_a("example.com", "192.0.2.1")
    dns_server.add_dkim_key("s1", "example.com", "v=DKIM1; p=abc")
    dns_server.add_cname("s2._domainkey.example.com", "s1._domainkey.example.com")
    r = resolver(dns_server)
    bridge = r.bridge(Deadline(5))
    rows = await asyncio.to_thread(bridge.spf_lookup, "example.com", "A")
    assert rows == [(("example.com", "A"), "192.0.2.1")]
    assert (
        await asyncio.to_thread(bridge.dkim_txt, b"s2._domainkey.example.com.") == b"v=DKIM1; p=abc"
    )
    assert await asyncio.to_thread(bridge.dkim_txt, b"none._domainkey.example.com.") is None
    # A second lookup is a cache hit answered in the thread.
    queries = len(dns_server.queries)
    await asyncio.to_thread(bridge.spf_lookup, "example.com", "A")
    assert len(dns_server.queries) == queries


async def test_bridge_respects_the_deadline(dns_server: DnsTestServer) -> None:
    dns_server.set_timeout("slow.example.com")
    r = resolver(dns_server, timeout=5.0)
    bridge = r.bridge(Deadline(0.3))
    with pytest.raises(DnsTempError, match="budget"):
        await asyncio.to_thread(bridge.spf_lookup, "slow.example.com", "A")
    # Once spent, further lookups fail at once instead of waiting again.
    with pytest.raises(DnsTempError, match="budget"):
        await asyncio.to_thread(bridge.spf_lookup, "other.example.com", "A")
