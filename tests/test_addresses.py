"""Source address parsing and netblock keys: the same answers from both cores."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import counts

V4 = 4
V6 = 6


def v6(text: str) -> tuple[int, int]:
    return V6, int(ipaddress.IPv6Address(text))


def v4(text: str) -> tuple[int, int]:
    return V4, int(ipaddress.IPv4Address(text))


VALID = [
    ("203.0.113.7", v4("203.0.113.7")),
    ("0.0.0.0", v4("0.0.0.0")),
    ("255.255.255.255", v4("255.255.255.255")),
    ("203.0.113.7:443", v4("203.0.113.7")),
    ("203.0.113.7:0", v4("203.0.113.7")),
    ("203.0.113.7:65535", v4("203.0.113.7")),
    ("2001:db8::1", v6("2001:db8::1")),
    ("2001:DB8::A", v6("2001:db8::a")),
    ("::", v6("::")),
    ("::1", v6("::1")),
    ("1::", v6("1::")),
    ("1:2:3:4:5:6:7:8", v6("1:2:3:4:5:6:7:8")),
    ("1:2:3:4:5:6:7::", v6("1:2:3:4:5:6:7:0")),
    ("::2:3:4:5:6:7:8", v6("0:2:3:4:5:6:7:8")),
    ("64:ff9b::192.0.2.33", v6("64:ff9b::c000:221")),
    ("1:2:3:4:5:6:1.2.3.4", v6("1:2:3:4:5:6:102:304")),
    ("[2001:db8::1]:443", v6("2001:db8::1")),
    ("[2001:db8::1]", v6("2001:db8::1")),
    ("fe80::1%eth0", v6("fe80::1")),
    ("fe80::1%25", v6("fe80::1")),
    ("[fe80::1%en0]:8080", v6("fe80::1")),
    ("fe80::%eth0", v6("fe80::")),                       # the zone right after '::'
    ("[::1%lo]", v6("::1")),
    ("1:2:3:4:5:6:7:8%" + "x" * 50, v6("1:2:3:4:5:6:7:8")),   # a long zone
    ("::1.2.3.4%eth0", v6("::102:304")),
    ("0000:0000:0000:0000:0000:0000:0000:0001", v6("::1")),
    # IPv4-mapped IPv6 folds to the IPv4 source
    ("::ffff:203.0.113.7", v4("203.0.113.7")),
    ("::FFFF:cb00:7107", v4("203.0.113.7")),
    ("0:0:0:0:0:ffff:203.0.113.7", v4("203.0.113.7")),
    ("[::ffff:203.0.113.7]:80", v4("203.0.113.7")),
    ("::ffff:203.0.113.7%eth0", v4("203.0.113.7")),
]

INVALID = [
    "",
    "garbage",
    "999.1.1.1",
    "256.0.0.1",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.",
    ".1.2.3",
    "01.2.3.4",           # octal-looking octet
    "1.2.3.04",
    "0x1.2.3.4",
    "1.2.3.4 ",
    " 1.2.3.4",
    "1.2.3.4\n",
    "1.2.3.4\x00",
    "1.2.3.4:",
    "1.2.3.4:65536",
    "1.2.3.4:123456",
    "1.2.3.4:-1",
    "1.2.3.4:8a",
    "1.2.3.4%eth0",
    "2001:db8:::1",
    "2001:db8::1::2",
    ":1::2",
    "1::2:",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:8::",
    "12345::1",
    "g::1",
    "::1.2.3",
    "1:2:3:4:5:6:7:1.2.3.4",
    "::ffff:1.2.3.04",
    "[2001:db8::1",
    "2001:db8::1]",
    "[2001:db8::1]:",
    "[2001:db8::1]:99999",
    "[2001:db8::1]x",
    "[1.2.3.4]:80",
    "[]:80",
    "fe80::1%",
    "fe80::1%eth 0",
    "fe80::1%\x00",
    "[fe80::1%]:80",
    "fe80::1%eth0%1",
    "1::%",
    "::1.2.3.4.5",
    "::ffff:1.2.3.4:80",
    "1:2:3:4:5:6:7:8:",
    "00000::1",
    "0000:0000:0000:0000:0000:0000:0000:00001",
    "\u0661.2.3.4",       # Arabic-Indic digit one
    "１.2.3.4",          # fullwidth digit one
    "1.2.3.4\u200b",
    "1" * 10_000,
    "1.2.3.4" + " " * 10_000,
]

BAD_TYPES: list[Any] = [None, 1, 1.5, b"1.2.3.4", bytearray(b"1.2.3.4"), ["1.2.3.4"], ("1.2.3.4",)]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_sources_parse(core: ModuleType, text: str, expected: tuple[int, int]) -> None:
    assert core.parse_source(text) == expected


@pytest.mark.parametrize("text", INVALID)
def test_invalid_source_raises_value_error_and_counts_nothing(
        core: ModuleType, make_tracker: Callable[..., Any], text: str) -> None:
    with pytest.raises(ValueError, match="invalid source address") as info:
        core.parse_source(text)
    assert len(str(info.value)) < 120              # a 10 kB input is truncated in the message
    t = make_tracker()
    t.accept("192.0.2.1", "a:80", now=1.0)
    before = counts(t)
    calls: list[Callable[[], object]] = [lambda: t.accept(text, "a:80", now=2.0),
                                         lambda: t.close(text, now=2.0), lambda: t.stats(text)]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert counts(t) == before
    assert t.stats("192.0.2.1").total == 1


@pytest.mark.parametrize("value", BAD_TYPES, ids=repr)
def test_non_str_source_raises_type_error_and_counts_nothing(
        core: ModuleType, make_tracker: Callable[..., Any], value: Any) -> None:
    with pytest.raises(TypeError, match="source"):
        core.parse_source(value)
    t = make_tracker()
    t.accept("192.0.2.1", now=1.0)
    before = counts(t)
    with pytest.raises(TypeError, match="source"):
        t.accept(value)
    with pytest.raises(TypeError, match="source"):
        t.close(value)
    assert counts(t) == before


def test_str_subclass_is_a_source(core: ModuleType) -> None:
    class Address(str):
        pass

    assert core.parse_source(Address("192.0.2.1")) == v4("192.0.2.1")


def test_ipv6_counts_per_64_by_default(make_tracker: Callable[..., Any]) -> None:
    t = make_tracker()
    for i in range(1, 50):
        t.accept(f"2001:db8:0:1::{i:x}", now=1.0)     # 49 hosts of one /64
    t.accept("2001:db8:0:2::1", now=1.0)
    assert t.tracked_sources == 2
    assert t.active_sources == 2
    s = t.stats("2001:db8:0:1:ffff:ffff:ffff:ffff")
    assert s is not None and s.source == "2001:db8:0:1::/64" and s.active == 49


def test_ipv4_mapped_and_zone_fold_onto_one_source(make_tracker: Callable[..., Any]) -> None:
    t = make_tracker()
    for text in ("203.0.113.7", "::ffff:203.0.113.7", "[::ffff:203.0.113.7]:5555", "203.0.113.7:80"):
        t.accept(text, now=1.0)
    for text in ("fe80::1%eth0", "[fe80::1%eth1]:22", "fe80::2"):
        t.accept(text, now=1.0)
    assert t.tracked_sources == 2
    assert t.stats("203.0.113.7").active == 4
    assert t.stats("fe80::99").source == "fe80::/64"
    assert t.stats("fe80::99").active == 3


@pytest.mark.parametrize(("v4_prefix", "v6_prefix", "source", "key"), [
    (32, 64, "198.51.100.77", "198.51.100.77"),
    (24, 64, "198.51.100.77", "198.51.100.0/24"),
    (0, 64, "198.51.100.77", "0.0.0.0/0"),
    (32, 128, "2001:db8::77", "2001:db8::77"),
    (32, 48, "2001:db8:aaaa:bbbb::1", "2001:db8:aaaa::/48"),
    (32, 56, "2001:db8:aaaa:bbff::1", "2001:db8:aaaa:bb00::/56"),
    (32, 96, "2001:db8::1:2:3", "2001:db8::1:0:0/96"),
    (32, 0, "2001:db8::77", "::/0"),
])
def test_prefix_masking(make_tracker: Callable[..., Any], v4_prefix: int, v6_prefix: int,
                        source: str, key: str) -> None:
    t = make_tracker(ipv4_prefix=v4_prefix, ipv6_prefix=v6_prefix)
    t.accept(source, now=1.0)
    assert [s.source for s in t.top(5)] == [key]


@given(st.ip_addresses(v=4))
def test_any_ipv4_parses_like_ipaddress(core: ModuleType, address: ipaddress.IPv4Address) -> None:
    assert core.parse_source(str(address)) == (V4, int(address))
    assert core.parse_source(f"{address}:8080") == (V4, int(address))
    assert core.parse_source(f"::ffff:{address}") == (V4, int(address))


@given(st.ip_addresses(v=6), st.sampled_from(["compressed", "exploded"]), st.booleans(),
       st.sampled_from(["", "%eth0", "%25"]))
def test_any_ipv6_parses_like_ipaddress(core: ModuleType, address: ipaddress.IPv6Address,
                                        form: str, bracket: bool, zone: str) -> None:
    text = getattr(address, form) + zone
    if bracket:
        text = f"[{text}]:443"
    mapped = address.ipv4_mapped
    expected = (V4, int(mapped)) if mapped is not None else (V6, int(address))
    assert core.parse_source(text) == expected


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_value_error(core: ModuleType, text: str) -> None:
    try:
        result = core.parse_source(text)
    except ValueError:
        return
    assert result[0] in (V4, V6)
    assert text.isascii() and len(text) <= 100
