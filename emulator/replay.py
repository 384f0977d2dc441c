"""Replay: serve a recorded goal state, every host in it rewritten to the emulator itself.

Two folder layouts are read: a goal-state history folder (GoalState.xml, HostingEnvironmentConfig.xml,
SharedConfig.xml, ExtensionsConfig.xml, Certificates.xml, VmSettings.json) and the fixture names of
tests/data/walinuxagent/wire (goal_state.xml, hosting_env.xml, shared_config.xml, ext_conf*.xml,
certs.xml). Certificates are served as recorded: they decrypt only with the transport key they were
encrypted to (for the fixtures, wire/trans_prv). The recorded hosts are never contacted: the
emulator makes no outbound request at all.
"""
import hashlib
import os
import re
import xml.etree.ElementTree as ET
from urllib.parse import unquote, urlsplit, parse_qsl

from emulator import documents
from emulator.files import read_capped
from emulator.platform import DEFAULT_VM, Snapshot

MAX_DOC_BYTES = 8 << 20
WIRESERVER_IP = "168.63.129.16"
# namespace names are identifiers, never fetched: they are kept as they are
_URL_RE = re.compile(r"""(xmlns(?::[\w.\-]+)?\s*=\s*["'][^"']*["'])|https?://([A-Za-z0-9.\-]+)(?::\d+)?""")

LAYOUTS = {
    "history": {"goal_state": "GoalState.xml", "hosting_env": "HostingEnvironmentConfig.xml",
                "shared_config": "SharedConfig.xml", "ext_conf": "ExtensionsConfig.xml",
                "certs": "Certificates.xml", "vm_settings": "VmSettings.json"},
    "fixture": {"goal_state": "goal_state.xml", "hosting_env": "hosting_env.xml",
                "shared_config": "shared_config.xml", "ext_conf": "ext_conf.xml", "certs": "certs.xml",
                "vm_settings": "vm_settings.json"},
}


class ReadOnlyReplay(Exception):
    """A run-time change asked of a replayed goal state, which is served as recorded."""


class Replay:
    mode = "replay"

    def __init__(self, folder, ext_conf=None):
        self.folder = os.path.abspath(folder)
        if os.path.exists(os.path.join(self.folder, "GoalState.xml")):
            self.layout = "history"
        elif os.path.exists(os.path.join(self.folder, "goal_state.xml")):
            self.layout = "fixture"
        else:
            raise ValueError("%s holds neither GoalState.xml nor goal_state.xml" % folder)
        names = dict(LAYOUTS[self.layout])
        if ext_conf:
            names["ext_conf"] = ext_conf
        self.recorded = {}
        for key, name in names.items():
            path = os.path.join(self.folder, name)
            if os.path.isfile(path):
                self.recorded[key] = read_capped(path, MAX_DOC_BYTES).decode("utf-8-sig")
        root = ET.fromstring(self.recorded["goal_state"].encode())
        self.incarnation = (root.findtext("Incarnation") or "1").strip()
        self.container_id = (root.findtext("Container/ContainerId") or "").strip()
        self.role_instance_id = (root.findtext("Container/RoleInstanceList/RoleInstance/InstanceId") or "").strip()
        self.config_name = (root.findtext("Container/RoleInstanceList/RoleInstance/Configuration/ConfigName")
                            or "").strip()
        self.urls = None
        self.snap = None

    def _rewrite(self, text):
        ws = self.urls["wireserver"]

        def sub(m):
            if m.group(1):
                return m.group(1)
            host = m.group(2)
            if host == WIRESERVER_IP:
                return ws
            return "%s/storage/replay/%s" % (ws, host)
        return _URL_RE.sub(sub, text)

    def set_urls(self, wireserver, hostgaplugin, imds):
        self.urls = {"wireserver": wireserver, "hostgaplugin": hostgaplugin, "imds": imds}
        docs = {k: self._rewrite(v) for k, v in self.recorded.items() if k != "certs"}
        vm_settings = docs.get("vm_settings")
        self.snap = Snapshot(
            incarnation=self.incarnation,
            goal_state=docs["goal_state"].encode(),
            hosting_env=docs.get("hosting_env", "").encode() or None,
            shared_config=docs.get("shared_config", "").encode() or None,
            extensions_config=docs.get("ext_conf", "").encode() or None,
            vm_settings=vm_settings.encode() if vm_settings else None,
            etag=hashlib.sha256(vm_settings.encode()).hexdigest()[:20] if vm_settings else None,
            pfx=None,
            certificates_verbatim=self.recorded["certs"].encode() if "certs" in self.recorded else None,
            config_name=self.config_name,
        )
        self._status_url = None
        if self.snap.extensions_config:
            try:
                node = ET.fromstring(self.snap.extensions_config).find("StatusUploadBlob")
                self._status_url = node.text.strip() if node is not None and node.text else None
            except ET.ParseError:
                pass

    def current(self):
        return self.snap

    def snapshot(self, incarnation):
        return self.snap if str(incarnation) == self.incarnation else None

    def identity(self):
        return {"container_id": self.container_id, "role_instance_id": self.role_instance_id,
                "config_name": self.config_name, "config_names": {self.config_name},
                "incarnations": {self.incarnation}}

    def status_blob_path(self):
        return urlsplit(self._status_url).path if self._status_url else None

    def status_blob_sig(self):
        if not self._status_url:
            return None
        return dict(parse_qsl(urlsplit(self._status_url).query)).get("sig")

    def storage_object(self, path):
        """A recorded blob is served when the folder holds a file named as the URL's last segment
        (e.g. a manifest); nothing else is known."""
        name = unquote(path.rstrip("/").rsplit("/", 1)[-1])
        candidate = os.path.join(self.folder, name)
        if name and os.path.isfile(candidate) and os.path.dirname(os.path.abspath(candidate)) == self.folder:
            data = read_capped(candidate, MAX_DOC_BYTES)
            if name.endswith((".xml", ".json")):
                data = self._rewrite(data.decode("utf-8-sig")).encode()
            return data, "application/octet-stream"
        return None, None

    def imds_instance(self):
        vm = dict(DEFAULT_VM, vm_name="replay")
        return documents.imds_instance(vm, "replay", vm["private_ip"])

    def describe(self):
        return {"scenario": "replay:%s" % self.folder, "layout": self.layout, "incarnation": self.incarnation,
                "container_id": self.container_id, "role_instance_id": self.role_instance_id,
                "config_name": self.config_name, "hostname": None, "certificates": [], "extensions": [],
                "status_blob_url": self._status_url if self.snap else None,
                "documents": sorted(self.recorded)}

    def export_certificates(self):
        return []

    def change(self, what, *args):
        raise ReadOnlyReplay("a replayed goal state cannot be changed")
