"""ovf-env.xml, the provisioning document on the DVD (reference/protocol.md §3.2), as a record.

Parsed in the worker (DESIGN.md principle 1) with defusedxml (no DTD, no entity, no external
reference) after a size cap and a BOM strip. The required elements are waagent's: Environment,
wa:ProvisioningSection with wa:Version, LinuxProvisioningConfigurationSet with HostName and
UserName, wa:PlatformSettingsSection/wa:PlatformSettings with ProvisionGuestAgent; anything
missing raises OvfError naming it. A Version above 1.0 is only a warning. `$HOME` in a key path
becomes OS.HomeDir. The password is kept out of repr() so no log line can carry it.
"""

import logging
from dataclasses import dataclass, field
from typing import Optional, Tuple
from xml.etree.ElementTree import Element

from workers.platform.documents import parse_xml
from workers.platform.errors import DocumentError

log = logging.getLogger(__name__)

OVF_NS = "http://schemas.dmtf.org/ovf/environment/1"
WA_NS = "http://schemas.microsoft.com/windowsazure"
# Base64 of the 64 KiB CustomData Azure allows, the keys and the rest fit well under this;
# it is also well under the 1 MiB frame the broker returns the document in.
MAX_OVF_BYTES = 256 * 1024
MAX_KEYS = 64
SUPPORTED_VERSION = (1, 0)


class OvfError(ValueError):
    """ovf-env.xml is unusable: the message says what is wrong (never a secret)."""


@dataclass(frozen=True)
class PublicKey:
    fingerprint: str
    path: str
    value: Optional[str]     # an inline `ssh-...` key; else the certificate's key is used


@dataclass(frozen=True)
class KeyPair:
    fingerprint: str
    path: str


@dataclass(frozen=True)
class OvfEnv:
    version: str
    hostname: str
    username: str
    password: Optional[str] = field(repr=False)
    disable_ssh_password_auth: bool
    public_keys: Tuple[PublicKey, ...]
    key_pairs: Tuple[KeyPair, ...]
    custom_data: Optional[str] = field(repr=False)   # as on the DVD: base64 text
    provision_guest_agent: bool


def _q(ns: str, name: str) -> str:
    return "{%s}%s" % (ns, name)


def _find(parent: Element, ns: str, name: str) -> Optional[Element]:
    return parent.find(_q(ns, name))


def _need(parent: Element, ns: str, name: str, where: str) -> Element:
    el = _find(parent, ns, name)
    if el is None:
        raise OvfError("ovf-env.xml: %s has no %s" % (where, name))
    return el


def _text(el: Optional[Element]) -> Optional[str]:
    if el is None or el.text is None:
        return None
    return el.text.strip()


def _version_tuple(text: str):
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return None


def parse(data, home_dir: str = "/home") -> OvfEnv:
    """The record of an ovf-env.xml (bytes or str), or OvfError saying why not."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_OVF_BYTES:
        raise OvfError("ovf-env.xml is larger than %d bytes" % MAX_OVF_BYTES)
    try:
        root = parse_xml(data, "ovf-env.xml", MAX_OVF_BYTES)
    except DocumentError as e:
        raise OvfError(str(e)) from None
    if root.tag != _q(OVF_NS, "Environment"):
        raise OvfError("ovf-env.xml: the root is not an OVF Environment")
    section = _need(root, WA_NS, "ProvisioningSection", "Environment")
    version = _text(_need(section, WA_NS, "Version", "ProvisioningSection")) or ""
    parsed = _version_tuple(version)
    if parsed is None or parsed > SUPPORTED_VERSION:
        log.warning("ovf-env.xml version %r is newer than 1.0; reading it as 1.0", version[:16])
    conf = _need(section, WA_NS, "LinuxProvisioningConfigurationSet", "ProvisioningSection")
    hostname = _text(_need(conf, WA_NS, "HostName", "the configuration set"))
    username = _text(_need(conf, WA_NS, "UserName", "the configuration set"))
    if not hostname:
        raise OvfError("ovf-env.xml: HostName is empty")
    if not username:
        raise OvfError("ovf-env.xml: UserName is empty")
    password_el = _find(conf, WA_NS, "UserPassword")
    # A password is kept as given (spaces may be part of it); empty means none.
    password = password_el.text if password_el is not None and password_el.text else None
    disable = (_text(_find(conf, WA_NS, "DisableSshPasswordAuthentication")) or "").lower() == "true"

    def expand(path: str) -> str:
        return path.replace("$HOME", home_dir.rstrip("/") or "/")

    public_keys, key_pairs = [], []
    ssh = _find(conf, WA_NS, "SSH")
    if ssh is not None:
        for container, name, out in (("PublicKeys", "PublicKey", public_keys),
                                     ("KeyPairs", "KeyPair", key_pairs)):
            box = _find(ssh, WA_NS, container)
            if box is None:
                continue
            for el in box.findall(_q(WA_NS, name)):
                if len(out) >= MAX_KEYS:
                    raise OvfError("ovf-env.xml: more than %d %s" % (MAX_KEYS, container))
                fingerprint = _text(_find(el, WA_NS, "Fingerprint")) or ""
                path = _text(_find(el, WA_NS, "Path"))
                if not path:
                    raise OvfError("ovf-env.xml: a %s has no Path" % name)
                if name == "PublicKey":
                    value = _text(_find(el, WA_NS, "Value")) or None
                    out.append(PublicKey(fingerprint.upper(), expand(path), value))
                else:
                    out.append(KeyPair(fingerprint.upper(), expand(path)))
    custom = _text(_find(conf, WA_NS, "CustomData")) or None

    platform = _need(root, WA_NS, "PlatformSettingsSection", "Environment")
    settings = _need(platform, WA_NS, "PlatformSettings", "PlatformSettingsSection")
    pga = _need(settings, WA_NS, "ProvisionGuestAgent", "PlatformSettings")
    # Only the literal false disables (true, empty and garbage all provision the agent).
    provision_agent = (_text(pga) or "").lower() != "false"
    return OvfEnv(version=version, hostname=hostname, username=username, password=password,
                  disable_ssh_password_auth=disable, public_keys=tuple(public_keys),
                  key_pairs=tuple(key_pairs), custom_data=custom,
                  provision_guest_agent=provision_agent)
