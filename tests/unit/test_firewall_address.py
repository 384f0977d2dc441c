"""Which address the WireServer firewall guards (supervisor/privileged/firewall.py): the
broker's own configuration only, never loopback, and only where it is told or on Azure."""

import pytest

from cli.deprovision import FIREWALL_TABLES
from config import defaults
from ipc.errors import IpcError
from supervisor.privileged import firewall


def conf(endpoint, sysroot="/nonexistent-root"):
    return defaults().with_overrides(Protocol__Endpoint=endpoint, OS__SysRoot=sysroot)


@pytest.mark.parametrize("endpoint, address", [
    ("10.214.0.16", "10.214.0.16"),
    ("10.214.0.16:8080", "10.214.0.16"),
    ("168.63.129.16", "168.63.129.16"),
])
def test_protocol_endpoint_names_the_address(endpoint, address):
    assert firewall.address(conf(endpoint, sysroot="/")) == address


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9", "127.9.9.9", "0.0.0.0", "224.0.0.1"])
def test_never_loopback_or_unspecified(endpoint):
    with pytest.raises(IpcError, match="not one a firewall may guard"):
        firewall.address(conf(endpoint, sysroot="/"))


def test_without_an_endpoint_only_on_azure():
    """This host has no Azure chassis tag: with no Protocol.Endpoint (or a host name) the
    broker leaves the network alone; a fixture root stands for the VM's."""
    from supervisor.privileged.boot import _machine_is_ours
    if _machine_is_ours(conf(None, sysroot="/")):
        pytest.skip("this host is an Azure VM")
    for endpoint in (None, "wireserver.example:80"):
        with pytest.raises(IpcError, match="not an Azure VM"):
            firewall.address(conf(endpoint, sysroot="/"))
        assert firewall.address(conf(endpoint)) == "168.63.129.16"


def test_deprovision_removes_the_table_the_broker_makes():
    assert FIREWALL_TABLES == (firewall.TABLE,)
