"""Endpoint discovery: lease parsers (fixtures, our own networkd lease, hypothesis), the route
check, and the order of candidates under an OS.SysRoot tree."""

import datetime
import pathlib
import shutil

import pytest
from hypothesis import given, settings, strategies as st

from config import defaults
from workers.platform import endpoint
from workers.platform.endpoint import Endpoint

DATA = pathlib.Path(__file__).parent / "data"
NOW = datetime.datetime(2026, 1, 1)


def test_dhclient_fixtures(fixtures_dir):
    assert endpoint.parse_dhclient_leases((fixtures_dir / "dhcp.leases").read_text(), NOW) == "168.63.129.16"
    # The last lease that has not expired wins.
    assert endpoint.parse_dhclient_leases((fixtures_dir / "dhcp.leases.multi").read_text(), NOW) == "168.63.129.2"
    assert endpoint.parse_dhclient_leases((fixtures_dir / "dhcp.leases.custom.dns").read_text(), NOW) == "168.63.129.16"


def test_expired_lease_is_ignored():
    text = "lease {\n  option unknown-245 a8:3f:81:10;\n  expire 4 2015/06/16 16:58:54;\n}\n"
    assert endpoint.parse_dhclient_leases(text, NOW) is None
    assert endpoint.parse_dhclient_leases(text, datetime.datetime(2014, 1, 1)) == "168.63.129.16"


def test_networkd_lease():
    assert endpoint.parse_networkd_lease((DATA / "networkd_lease").read_text()) == "168.63.129.16"
    assert endpoint.parse_networkd_lease("ADDRESS=10.0.0.4\n") is None
    assert endpoint.parse_networkd_lease("OPTION_245=zz3f8110\n") is None


def test_decode_option_245():
    assert endpoint.decode_option_245("a8:3f:81:10") == "168.63.129.16"
    assert endpoint.decode_option_245("a8:3f:81:1") == "168.63.129.1"
    assert endpoint.decode_option_245("A83F8110") == "168.63.129.16"
    for bad in ("", "a8:3f:81", "a8:3f:81:10:11", "g8:3f:81:10", "a83f81", "1.2.3.4"):
        assert endpoint.decode_option_245(bad) is None


def test_route_check():
    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    assert endpoint.route_has_wireserver(header + "eth0\t10813FA8\t0100000A\t0007\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n")
    assert not endpoint.route_has_wireserver(header + "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    assert not endpoint.route_has_wireserver("garbage")


def test_endpoint_parse():
    assert Endpoint.parse("127.0.0.1:8080") == Endpoint("127.0.0.1", 8080)
    assert Endpoint.parse("168.63.129.16") == Endpoint("168.63.129.16", 80)
    assert Endpoint.parse("[::1]:81").base_url == "http://[::1]:81"
    for bad in ("", ":80", "host:0", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)


def sysroot(tmp_path, fixtures_dir, route=None, dhclient=None, networkd=None):
    root = tmp_path / "root"
    (root / "proc" / "net").mkdir(parents=True)
    (root / "proc" / "net" / "route").write_text(
        "Iface\tDestination\tGateway\n" + (route or "eth0\t00000000\t0100000A\n"))
    if dhclient:
        (root / "var" / "lib" / "dhcp").mkdir(parents=True)
        shutil.copy(fixtures_dir / dhclient, root / "var" / "lib" / "dhcp" / "dhclient.eth0.leases")
    if networkd:
        (root / "run" / "systemd" / "netif" / "leases").mkdir(parents=True)
        (root / "run" / "systemd" / "netif" / "leases" / "2").write_text(networkd)
    return root


def conf(tmp_path, root, **more):
    return defaults().with_overrides(OS__SysRoot=str(root), Agent__StateDir=str(tmp_path / "state"),
                                     **more)


def test_configured_endpoint_is_the_only_candidate(tmp_path, fixtures_dir):
    root = sysroot(tmp_path, fixtures_dir, dhclient="dhcp.leases.multi")
    c = conf(tmp_path, root, Protocol__Endpoint="127.0.0.1:9")
    assert endpoint.candidates(c) == [Endpoint("127.0.0.1", 9)]


def test_candidates_order(tmp_path, fixtures_dir):
    root = sysroot(tmp_path, fixtures_dir, dhclient="dhcp.leases.multi")
    c = conf(tmp_path, root)
    own = tmp_path / "state" / "extensions"
    assert endpoint.candidates(c, state_dir=str(own)) == [Endpoint("168.63.129.2"),
                                                          Endpoint("168.63.129.16")]
    own.mkdir(parents=True)
    endpoint.save_endpoint(str(own), Endpoint("10.1.2.3", 80))
    # Kept in the worker's own folder, readable by it only.
    assert (own / endpoint.SAVED_ENDPOINT_FILE).stat().st_mode & 0o777 == 0o600
    assert endpoint.candidates(c, state_dir=str(own)) == [
        Endpoint("168.63.129.2"), Endpoint("10.1.2.3"), Endpoint("168.63.129.16")]
    assert endpoint.candidates(c, skip_dhcp=True, state_dir=str(own)) == [
        Endpoint("10.1.2.3"), Endpoint("168.63.129.16")]
    no_dhcp = c.with_overrides(Protocol__EndpointDiscovery="static")
    assert endpoint.candidates(no_dhcp, state_dir=str(own))[0] == Endpoint("10.1.2.3")
    # Another worker's folder (or none) does not see it.
    assert Endpoint("10.1.2.3") not in endpoint.candidates(
        c, state_dir=str(tmp_path / "state" / "monitoring"))
    assert Endpoint("10.1.2.3") not in endpoint.candidates(c)


def test_route_and_networkd(tmp_path, fixtures_dir):
    root = sysroot(tmp_path, fixtures_dir, route="eth0\t10813FA8\t0100000A\n",
                   networkd="OPTION_245=a83f8101\n")
    assert endpoint.candidates(conf(tmp_path, root)) == [Endpoint("168.63.129.16"),
                                                         Endpoint("168.63.129.1")]


def test_nothing_found_falls_back_to_the_well_known_address(tmp_path, fixtures_dir):
    root = sysroot(tmp_path, fixtures_dir)
    assert endpoint.candidates(conf(tmp_path, root)) == [Endpoint("168.63.129.16")]


# --- property-based -------------------------------------------------------------------------

octets = st.lists(st.integers(0, 255), min_size=4, max_size=4)
times = st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2100, 1, 1))


@st.composite
def lease_files(draw):
    leases = draw(st.lists(st.tuples(octets, st.one_of(st.none(), st.just("never"), times)),
                           max_size=6))
    text = []
    for ip, expire in leases:
        text.append("lease {\n  interface \"eth0\";\n")
        text.append("  option unknown-245 %s;\n" % ":".join("%x" % o for o in ip))
        if expire == "never":
            text.append("  expire 0 never;\n")
        elif expire is not None:
            text.append("  expire 3 %s;\n" % expire.strftime("%Y/%m/%d %H:%M:%S"))
        text.append("}\n")
    return leases, "".join(text)


@settings(max_examples=300, deadline=None)
@given(lease_files(), times)
def test_dhclient_parser_picks_the_last_valid_lease(generated, now):
    leases, text = generated
    # A lease file holds whole seconds: an expiry 1 µs after `now` is written as `now`.
    valid = [ip for ip, exp in leases
             if exp is None or exp == "never" or exp.replace(microsecond=0) > now]
    expected = ".".join(map(str, valid[-1])) if valid else None
    assert endpoint.parse_dhclient_leases(text, now) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_lease_parsers_never_crash(text):
    for result in (endpoint.parse_dhclient_leases(text, NOW), endpoint.parse_networkd_lease(text)):
        assert result is None or len(result.split(".")) == 4


@settings(max_examples=200, deadline=None)
@given(octets, st.lists(st.from_regex(r"\A[A-Z_]{1,10}=[a-z0-9.]{0,12}\Z"), max_size=5))
def test_networkd_parser_finds_option_245(ip, noise):
    text = "\n".join(noise + ["OPTION_245=%s" % "".join("%02x" % o for o in ip)] + noise)
    if any(n.startswith("OPTION_245=") for n in noise):
        return
    assert endpoint.parse_networkd_lease(text) == ".".join(map(str, ip))
