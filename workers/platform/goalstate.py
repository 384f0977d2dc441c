"""The goal state document (protocol.md §1.4) as a typed record.

Required: Incarnation, Container/ContainerId, and one RoleInstance with its InstanceId. A goal
state without RoleInstance raises NoRoleInstanceError (the platform is still building it; the
client refetches it Protocol.GoalStateRetries times). The Configuration URLs are optional
(goal_state_no_ext.xml, goal_state_no_certs.xml) and kept as given; the client only follows
them on the WireServer it talks to.
"""

from typing import NamedTuple, Optional, Tuple

from workers.platform.documents import (child, children, expect_root, parse_xml,
                                        required_text, text)
from workers.platform.errors import DocumentError, NoRoleInstanceError

DOC = "GoalState"


class GoalState(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    incarnation: str
    container_id: str
    role_instance_id: str
    role_config_name: Optional[str]
    expected_state: Optional[str]
    version: Optional[str]
    hosting_environment_url: Optional[str]
    shared_config_url: Optional[str]
    extensions_config_url: Optional[str]
    certificates_url: Optional[str]
    full_config_url: Optional[str]
    remote_access_url: Optional[str]
    lb_probe_ports: Tuple[int, ...] = ()

    @property
    def id(self) -> str:
        """The id used in logs and status: incarnation_<N>."""
        return "incarnation_%s" % self.incarnation

    @property
    def deployment_id(self) -> Optional[str]:
        """ConfigName up to its first dot (for logs and x-ms-vmagentlog-deploymentid)."""
        if not self.role_config_name:
            return None
        return self.role_config_name.split(".", 1)[0]


def parse_goal_state(data) -> GoalState:
    root = parse_xml(data, DOC)
    expect_root(root, DOC, DOC)
    incarnation = required_text(root, DOC, "Incarnation")
    container = child(root, "Container")
    if container is None:
        raise DocumentError(DOC, "missing Container")
    container_id = required_text(container, DOC, "ContainerId")
    instances = list(children(child(container, "RoleInstanceList"), "RoleInstance"))
    if not instances:
        raise NoRoleInstanceError(DOC, "no RoleInstance (goal state not ready)")
    role = instances[0]
    instance_id = required_text(role, DOC, "InstanceId")
    configuration = child(role, "Configuration")
    ports = []
    for port in children(child(root, "Machine", "LBProbePorts"), "Port"):
        try:
            ports.append(int((port.text or "").strip()))
        except ValueError:
            raise DocumentError(DOC, "LBProbePorts/Port is not a number") from None
    return GoalState(
        incarnation=incarnation,
        container_id=container_id,
        role_instance_id=instance_id,
        role_config_name=text(configuration, "ConfigName"),
        expected_state=text(root, "Machine", "ExpectedState"),
        version=text(root, "Version"),
        hosting_environment_url=text(configuration, "HostingEnvironmentConfig"),
        shared_config_url=text(configuration, "SharedConfig"),
        extensions_config_url=text(configuration, "ExtensionsConfig"),
        certificates_url=text(configuration, "Certificates"),
        full_config_url=text(configuration, "FullConfig"),
        remote_access_url=text(container, "RemoteAccessInfo"),
        lb_probe_ports=tuple(ports),
    )
