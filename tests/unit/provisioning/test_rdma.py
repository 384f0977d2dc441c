"""The worker's reading of SharedConfig.xml for RDMA (workers/provisioning/rdma.py), as waagent's
setup_rdma_device: the first <Instance>'s rdmaIPv4Address and rdmaMacAddress, the MAC given as 12
hex digits and written with colons; anything missing or malformed is logged and nothing asked."""

import pytest

from workers.platform import documents
from workers.provisioning import rdma


def test_a_real_rdma_vms_shared_config(fixtures_dir):
    sc = documents.parse_shared_config(
        (fixtures_dir / "wire" / "shared_config_rdma.xml").read_bytes())
    assert (sc.rdma_ipv4, sc.rdma_mac) == ("172.16.2.59", "00155D340044")
    assert rdma.addresses(sc) == ("172.16.2.59", "00:15:5D:34:00:44")


def test_a_shared_config_without_rdma(fixtures_dir):
    sc = documents.parse_shared_config((fixtures_dir / "wire" / "shared_config.xml").read_bytes())
    assert (sc.rdma_ipv4, sc.rdma_mac) == (None, None)
    assert rdma.addresses(sc) is None


@pytest.mark.parametrize("attributes, logged", [
    ('rdmaMacAddress="00155D340044"', "no rdmaIPv4Address"),
    ('rdmaIPv4Address="172.16.2.59"', "no rdmaMacAddress"),
    ('rdmaIPv4Address="172.16.2.59" rdmaMacAddress="00:15:5D:34:00:44"', "not 12 hex digits"),
    ('rdmaIPv4Address="172.16.2.59" rdmaMacAddress="00155D34004Z"', "not 12 hex digits"),
])
def test_missing_or_malformed_attributes(caplog, attributes, logged):
    sc = documents.parse_shared_config(
        '<SharedConfig><Instances><Instance id="i" %s/></Instances></SharedConfig>' % attributes)
    assert rdma.addresses(sc) is None
    assert logged in caplog.text


def test_enabled_as_waagent_but_not_by_the_driver_update_key():
    assert rdma.enabled({"OS.EnableRDMA": True, "OS.CheckRdmaDriver": False})
    assert rdma.enabled({"OS.EnableRDMA": False, "OS.CheckRdmaDriver": True})
    assert not rdma.enabled({"OS.EnableRDMA": False, "OS.CheckRdmaDriver": False})
