"""The emulated VM and its platform state: identity, incarnation, tenant certificates, extensions,
and the documents rendered from them for each incarnation.

All mutation goes through Platform methods under one lock; every change the platform would announce
bumps the incarnation, and the documents of the last few incarnations are kept so a request for a
URL of an older incarnation can be answered as the platform answers it (410 once it is gone).
"""
import base64
import collections
import hashlib
import json
import os
import secrets
import threading
import time
import uuid
from urllib.parse import quote, unquote

from emulator import cms, documents, handler_packages, tenant_certs
from emulator.files import read_capped

MAX_SCENARIO_BYTES = 4 << 20
KEPT_INCARNATIONS = 8
# .NET ticks at the Unix epoch: createdOnTicks counts 100 ns since 0001-01-01
_TICKS_AT_EPOCH = 621355968000000000
# In FastTrack mode vmSettings are stamped this much later than the ExtensionsConfig of the same
# change (1 ms): on Azure a Fast Track goal state reaches the HostGAPlugin before Fabric's, so an
# agent choosing by created-on time (protocol.md §1.14) takes the vmSettings.
FASTTRACK_LEAD_TICKS = 10_000

DEFAULT_VM = {
    "hostname": "guestagent-vm",
    "username": "azureuser",
    "password": None,
    "disable_ssh_password_authentication": False,
    "ssh_public_keys": [],
    "ssh_key_pairs": [],
    "custom_data": None,
    "provision_guest_agent": True,
    "vm_name": None,
    "vm_id": "d0a7b6a2-1b4c-4d1e-9f7a-1c2b3d4e5f60",
    "container_id": "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2",
    "role_name": "MachineRole",
    "instance_name": "MachineRole_IN_0",
    "deployment_name": "db00a7755a5e4e8a8fe4b19bc3b330c3",
    "subscription_id": "8e037ad4-618f-4466-8bc8-5099d41ac15b",
    "resource_group": "guestagent-rg",
    "location": "eastus",
    "vm_size": "Standard_D2s_v3",
    "private_ip": "10.0.0.4",
}


class ScenarioError(ValueError):
    pass


def load_scenario(path):
    doc = json.loads(read_capped(path, MAX_SCENARIO_BYTES).decode("utf-8"))
    if not isinstance(doc, dict):
        raise ScenarioError("scenario must be a JSON object")
    return doc, os.path.dirname(os.path.abspath(path))


def _ticks_now():
    return _TICKS_AT_EPOCH + int(time.time() * 10_000_000)


class Snapshot:
    """The documents of one incarnation, rendered once (the goal-state poll is the hot path)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class Platform:
    mode = "scenario"

    def __init__(self, scenario, base_dir):
        self.lock = threading.RLock()
        self.base_dir = base_dir
        self.name = scenario.get("name", "scenario")
        vm = dict(DEFAULT_VM)
        vm.update(scenario.get("vm") or {})
        if not vm.get("vm_name"):
            vm["vm_name"] = vm["hostname"]
        self.vm = vm
        self.hostname = vm["hostname"]
        self.incarnation = int(scenario.get("incarnation", 1))
        self.status_blob_type = scenario.get("status_blob_type", "BlockBlob")
        if self.status_blob_type not in ("BlockBlob", "PageBlob", None):
            raise ScenarioError("status_blob_type must be BlockBlob, PageBlob or null")
        self.vm_settings_mode = scenario.get("vm_settings", "fabric")
        if self.vm_settings_mode not in ("fabric", "fasttrack", "unsupported"):
            raise ScenarioError("vm_settings must be fabric, fasttrack or unsupported")
        self.required_features = list(scenario.get("required_features") or [])
        self.artifacts_profile = scenario.get("in_vm_artifacts_profile")
        self.ga_families = scenario.get("ga_families", [{"name": "Prod"}, {"name": "Test"}])
        self.with_certificates_url = scenario.get("certificates_url", True)
        # A SharedConfig served verbatim (e.g. an RDMA size's, with rdmaIPv4Address and
        # rdmaMacAddress on its Instance) instead of the generated one.
        self.shared_config_bytes = None
        if scenario.get("shared_config"):
            self.shared_config_bytes = read_capped(self._path(scenario["shared_config"]), MAX_SCENARIO_BYTES)
        self.status_sig = secrets.token_urlsafe(24)
        self.in_svd_seq_no = int(scenario.get("in_svd_seq_no", 1))

        self.certs = collections.OrderedDict()
        for spec in scenario.get("certificates") or []:
            self._add_cert(spec)
        self.extensions = collections.OrderedDict()
        self.packages = {}          # (handler name, version) -> zip bytes
        self.package_sources = {}   # (handler name, version) -> folder
        for spec in scenario.get("extensions") or []:
            ext = self._normalize_extension(spec)
            self.extensions[ext["name"].lower()] = ext
        self._protected_cache = {}
        self.urls = None
        self.snapshots = collections.OrderedDict()

    # --- scenario parsing ----------------------------------------------------------------

    def _path(self, rel):
        return rel if os.path.isabs(rel) else os.path.join(self.base_dir, rel)

    def _add_cert(self, spec):
        name = spec["name"]
        if spec.get("cert"):
            tc = tenant_certs.load(name, self._path(spec["cert"]), self._path(spec["key"]) if spec.get("key") else None)
        else:
            tc = tenant_certs.generate(name, spec.get("common_name"))
        self.certs[name] = tc
        return tc

    def _normalize_settings(self, spec, where):
        out = {
            "seq_no": int(spec.get("seq_no", 0)),
            "public_settings": spec.get("public_settings"),
            "protected_settings": spec.get("protected_settings"),
            "cert": spec.get("protected_settings_cert"),
        }
        if out["protected_settings"] is not None:
            if not out["cert"]:
                out["cert"] = next(iter(self.certs), None)
            if out["cert"] not in self.certs:
                raise ScenarioError("%s: protected_settings_cert %r is not a scenario certificate" % (where, out["cert"]))
        return out

    def _normalize_extension(self, spec):
        name = spec["name"]
        version = str(spec["version"])
        handler = spec.get("handler")
        ext = {
            "name": name, "version": version, "state": spec.get("state", "enabled"),
            "handler": self._path(handler) if handler else None,
            "auto_upgrade": bool(spec.get("auto_upgrade", False)),
            "run_as_startup_task": bool(spec.get("run_as_startup_task", False)),
            "encoded_signature": spec.get("encoded_signature"),
            "dependency_level": spec.get("dependency_level"),
            "depends_on": list(spec.get("depends_on") or []),
            "no_settings": bool(spec.get("no_settings", False)),
            "multi_config": None,
        }
        if ext["state"] not in ("enabled", "disabled", "uninstall"):
            raise ScenarioError("%s: state must be enabled, disabled or uninstall" % name)
        if spec.get("multi_config"):
            mc = []
            for e in spec["multi_config"]:
                s = self._normalize_settings(e, "%s/%s" % (name, e["name"]))
                s.update(name=e["name"], state=e.get("state", "enabled"),
                         dependency_level=e.get("dependency_level"), depends_on=list(e.get("depends_on") or []))
                mc.append(s)
            ext["multi_config"] = mc
        else:
            ext.update(self._normalize_settings(spec, name))
        if ext["handler"]:
            self._build_package(name, version, ext["handler"])
        return ext

    def _build_package(self, name, version, folder):
        key = (name.lower(), version)
        if key not in self.packages:
            if not os.path.isdir(folder) and not (os.path.isfile(folder) and folder.endswith(".zip")):
                raise ScenarioError("handler folder %s does not exist" % folder)
            self.packages[key] = handler_packages.package_bytes(folder)
            self.package_sources[key] = folder

    # --- URLs --------------------------------------------------------------------------------

    def set_urls(self, wireserver, hostgaplugin, imds):
        """Base URLs the documents name ("http://host:port"); storage lives under the WireServer."""
        with self.lock:
            self.urls = {"wireserver": wireserver, "hostgaplugin": hostgaplugin, "imds": imds,
                         "storage": wireserver + "/storage"}
            self.snapshots.clear()

    def status_blob_url(self):
        return "%s/vhds/%s.status?sr=b&sp=rw&se=9999-01-01&sk=key1&sv=2014-02-14&sig=%s" % (
            self.urls["storage"], quote(self.vm["vm_name"]), self.status_sig)

    def manifest_url(self, name, failover=False):
        return "%s/%sextensions/%s/manifest.xml" % (self.urls["storage"], "failover/" if failover else "", quote(name))

    def package_url(self, name, version):
        return "%s/packages/%s__%s" % (self.urls["storage"], quote(name), quote(version))

    def artifacts_profile_url(self):
        return "%s/system/%s.vmSettings?sv=2018-03-28&sr=b&sk=system-1&sig=%s&sp=r" % (
            self.urls["storage"], quote(self.vm["vm_name"]), self.status_sig)

    def ga_manifest_url(self, family):
        return "%s/ga/%s_manifest.xml" % (self.urls["storage"], quote(family))

    # --- protected settings ------------------------------------------------------------------

    def _protected(self, owner, settings):
        if settings["protected_settings"] is None:
            return None, None
        tc = self.certs[settings["cert"]]
        payload = json.dumps(settings["protected_settings"], sort_keys=True)
        key = (owner, settings["seq_no"], tc.thumbprint, payload)
        if key not in self._protected_cache:
            der = cms.envelope(payload.encode(), tc.cert, cipher="AES128_CBC", recipient_id="issuer_and_serial_number",
                               key_wrap="rsaes_pkcs1v15")
            self._protected_cache[key] = base64.b64encode(der).decode()
        return self._protected_cache[key], tc.thumbprint

    def _fasttrack_settings(self, public, protected_b64, thumbprint):
        d = {"publicSettings": json.dumps(public) if public is not None else None}
        if protected_b64:
            d["protectedSettings"] = protected_b64
            d["protectedSettingsCertThumbprint"] = thumbprint
        return d

    def _plugins(self):
        plugins = []
        for ext in self.extensions.values():
            name = ext["name"]
            p = {"name": name, "version": ext["version"], "state": ext["state"],
                 "location": self.manifest_url(name), "failover": self.manifest_url(name, failover=True),
                 "additional": [], "auto_upgrade": ext["auto_upgrade"],
                 "run_as_startup_task": ext["run_as_startup_task"], "encoded_signature": ext["encoded_signature"]}
            if ext["multi_config"] is not None:
                multi, deps = [], []
                for e in ext["multi_config"]:
                    prot, tp = self._protected(name + "/" + e["name"], e)
                    multi.append({"name": e["name"], "seq_no": e["seq_no"], "state": e["state"],
                                  "json": documents.runtime_settings_json(e["public_settings"], prot, tp),
                                  "fasttrack": self._fasttrack_settings(e["public_settings"], prot, tp)})
                    if e["dependency_level"] is not None:
                        deps.append({"name": e["name"], "level": e["dependency_level"],
                                     "handlers": [h if isinstance(h, dict) else {"handler": h} for h in e["depends_on"]]})
                p["settings"] = {"multi": multi}
                p["depends_on"] = deps
            elif not ext["no_settings"]:
                prot, tp = self._protected(name, ext)
                p["settings"] = {"seq_no": ext["seq_no"],
                                 "json": documents.runtime_settings_json(ext["public_settings"], prot, tp),
                                 "fasttrack": self._fasttrack_settings(ext["public_settings"], prot, tp)}
                if ext["dependency_level"] is not None:
                    p["depends_on"] = [{"level": ext["dependency_level"],
                                        "handlers": [h if isinstance(h, dict) else {"handler": h}
                                                     for h in ext["depends_on"]]}]
            plugins.append(p)
        return plugins

    # --- snapshots -----------------------------------------------------------------------------

    def config_name(self):
        return "%s.%d.%s.%d.%s.%s.xml" % (self.vm["deployment_name"], 5, self.vm["deployment_name"], 5,
                                          "_" + self.vm["role_name"], self.incarnation)

    def role_instance_id(self):
        return "%s.%s" % (self.vm["deployment_name"], self.vm["instance_name"])

    def current(self):
        """The Snapshot of the current incarnation (rendered on first use)."""
        snap = self.snapshots.get(self.incarnation)
        if snap is not None:
            return snap
        with self.lock:
            snap = self.snapshots.get(self.incarnation)
            if snap is None:
                snap = self._render()
                self.snapshots[self.incarnation] = snap
                while len(self.snapshots) > KEPT_INCARNATIONS:
                    self.snapshots.popitem(last=False)
            return snap

    def snapshot(self, incarnation):
        try:
            return self.snapshots.get(int(incarnation))
        except ValueError:
            return None

    def identity(self):
        """What the servers check requests against: the current names and those still served."""
        snap = self.current()
        kept = list(self.snapshots.values())
        return {"container_id": self.vm["container_id"], "role_instance_id": self.role_instance_id(),
                "config_name": snap.config_name, "config_names": {s.config_name for s in kept},
                "incarnations": {str(s.incarnation) for s in kept}}

    def status_blob_path(self):
        if not self.status_blob_type or self.urls is None:
            return None
        return "/storage/vhds/%s.status" % quote(self.vm["vm_name"])

    def status_blob_sig(self):
        return self.status_sig

    def storage_object(self, path):
        """(bytes, content type) of a blob the documents name, or (None, None)."""
        parts = [unquote(p) for p in path.split("/") if p]
        if len(parts) == 4 and parts[:2] == ["storage", "extensions"] and parts[3] == "manifest.xml" or \
                len(parts) == 5 and parts[:3] == ["storage", "failover", "extensions"] and parts[4] == "manifest.xml":
            with self.lock:
                return self.manifest_for(parts[-2]), "text/xml"
        if len(parts) == 3 and parts[:2] == ["storage", "packages"] and "__" in parts[2]:
            name, _, version = parts[2].rpartition("__")
            with self.lock:
                return self.package_for(name, version), "application/octet-stream"
        if len(parts) == 3 and parts[:2] == ["storage", "system"] and self.artifacts_profile is not None:
            return json.dumps(self.artifacts_profile).encode(), "application/json"
        if len(parts) == 3 and parts[:2] == ["storage", "ga"]:
            # an agent family with no packages: guestagent must not self-update from WALinuxAgent builds
            return documents.plugin_manifest([]).encode(), "text/xml"
        return None, None

    def imds_instance(self):
        with self.lock:
            vm = dict(self.vm)
            return documents.imds_instance(vm, self.hostname, vm["private_ip"])

    def change(self, what, *args):
        return getattr(self, what)(*args)

    def _render(self):
        if self.urls is None:
            raise RuntimeError("set_urls() first")
        inc = self.incarnation
        vm = self.vm
        base = "%s/machine/%s/%s" % (self.urls["wireserver"], quote(vm["container_id"]),
                                     quote(self.role_instance_id(), safe=""))
        urls = {t: "%s?comp=config&type=%s&incarnation=%d" % (base, t, inc)
                for t in ("hostingEnvironmentConfig", "sharedConfig", "extensionsConfig", "fullConfig")}
        urls["certificates"] = "%s?comp=certificates&incarnation=%d" % (base, inc)
        gs = documents.goal_state(inc, vm["container_id"], self.role_instance_id(), urls, self.config_name(),
                                  with_certificates=bool(self.certs) and self.with_certificates_url)
        plugins = self._plugins()
        metadata = {"in_svd_seq_no": self.in_svd_seq_no, "created_on_ticks": _ticks_now(),
                    "activity_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}
        families = [dict(f, uris=[self.ga_manifest_url(f["name"])]) for f in self.ga_families]
        status_url = self.status_blob_url() if self.status_blob_type else None
        ext_conf = documents.extensions_config(
            inc, plugins, status_url, self.status_blob_type, metadata, families, self.required_features,
            self.artifacts_profile_url() if self.artifacts_profile is not None else None)
        vm_settings = None
        etag = None
        if self.vm_settings_mode != "unsupported":
            fast = self.vm_settings_mode == "fasttrack"
            vm_metadata = dict(metadata, created_on_ticks=metadata["created_on_ticks"] +
                               (FASTTRACK_LEAD_TICKS if fast else 0))
            vm_settings = documents.vm_settings(
                "FastTrack" if fast else "Fabric", inc, plugins, status_url,
                self.status_blob_type, vm_metadata, vm, families, self.required_features).encode()
            etag = hashlib.sha256(vm_settings).hexdigest()[:20]
        pfx = cms.pfx_of([(c.key, c.cert) for c in self.certs.values()]) if self.certs else None
        return Snapshot(
            incarnation=inc,
            goal_state=gs.encode(),
            hosting_env=documents.hosting_environment_config(inc, vm["deployment_name"], vm["role_name"],
                                                             vm["instance_name"]).encode(),
            shared_config=self.shared_config_bytes or documents.shared_config(
                inc, vm["deployment_name"], vm["role_name"], vm["instance_name"], vm["private_ip"]).encode(),
            extensions_config=ext_conf.encode(),
            vm_settings=vm_settings, etag=etag, pfx=pfx,
            cert_summary=[c.summary() for c in self.certs.values()],
            config_name=self.config_name(),
        )

    # --- blobs served from storage ---------------------------------------------------------------

    def manifest_for(self, name):
        versions = sorted({v for (n, v) in self.packages if n == name.lower()},
                          key=lambda v: [int(x) if x.isdigit() else x for x in v.split(".")])
        if not versions:
            return None
        real = next((e["name"] for e in self.extensions.values() if e["name"].lower() == name.lower()), name)
        return documents.plugin_manifest([(v, [self.package_url(real, v)]) for v in versions]).encode()

    def package_for(self, name, version):
        return self.packages.get((name.lower(), version))

    # --- runtime changes (each bumps the incarnation) ---------------------------------------------

    def _bump(self):
        self.incarnation += 1
        self.in_svd_seq_no += 1

    def upsert_extension(self, spec):
        with self.lock:
            old = self.extensions.get(spec["name"].lower())
            if old is not None and "handler" not in spec and old["handler"]:
                spec = dict(spec, handler=old["handler"])
            if old is not None and "seq_no" not in spec and not spec.get("multi_config"):
                # the platform raises the sequence number whenever settings change
                spec = dict(spec, seq_no=(old.get("seq_no") or 0) + 1)
            ext = self._normalize_extension(spec)
            self.extensions[ext["name"].lower()] = ext
            self._bump()
            return ext

    def set_extension_state(self, name, state):
        if state not in ("enabled", "disabled", "uninstall"):
            raise ScenarioError("state must be enabled, disabled or uninstall")
        with self.lock:
            ext = self.extensions.get(name.lower())
            if ext is None:
                raise KeyError(name)
            ext["state"] = state
            self._bump()
            return ext

    def remove_extension(self, name):
        with self.lock:
            if self.extensions.pop(name.lower(), None) is None:
                raise KeyError(name)
            self._bump()

    def rotate_certificate(self, name):
        """A new key and certificate under the same scenario name; settings encrypted to it follow,
        with their sequence numbers raised as the platform does when re-encrypting."""
        with self.lock:
            if name not in self.certs:
                raise KeyError(name)
            old = self.certs[name]
            self.certs[name] = tenant_certs.generate(name, None)
            for ext in self.extensions.values():
                for s in ext["multi_config"] or [ext]:
                    if s.get("cert") == name and s.get("protected_settings") is not None:
                        s["seq_no"] += 1
            self._bump()
            return old.thumbprint, self.certs[name].thumbprint

    def hibernate_resume(self):
        """What a hibernated VM finds on resume: every tenant certificate made anew (the platform
        regenerates them when the VM restarts) and the settings re-encrypted to them, under the
        *same* incarnation. The current documents are rendered again (new vmSettings ETag; the
        Certificates URL of this incarnation now serves the new certificates)."""
        with self.lock:
            changed = {}
            for name, old in list(self.certs.items()):
                self.certs[name] = tenant_certs.generate(name, None)
                changed[old.thumbprint] = self.certs[name].thumbprint
            self.snapshots.pop(self.incarnation, None)
            return changed

    def set_hostname(self, hostname):
        with self.lock:
            self.hostname = hostname
            self._bump()

    def bump(self):
        with self.lock:
            self._bump()

    def describe(self):
        with self.lock:
            exts = []
            for e in self.extensions.values():
                d = {"name": e["name"], "version": e["version"], "state": e["state"]}
                if e["multi_config"] is not None:
                    d["multi_config"] = [{"name": m["name"], "seq_no": m["seq_no"], "state": m["state"]}
                                         for m in e["multi_config"]]
                else:
                    d["seq_no"] = e["seq_no"]
                exts.append(d)
            return {
                "scenario": self.name,
                "incarnation": str(self.incarnation),
                "container_id": self.vm["container_id"],
                "role_instance_id": self.role_instance_id(),
                "config_name": self.config_name(),
                "hostname": self.hostname,
                "vm_id": self.vm["vm_id"],
                "certificates": [c.summary() for c in self.certs.values()],
                "extensions": exts,
                "status_blob_url": self.status_blob_url() if self.status_blob_type and self.urls else None,
                "vm_settings": self.vm_settings_mode,
            }

    def export_certificates(self):
        """PEMs of the tenant certificates (for tests and for the provisioning side of a demo)."""
        with self.lock:
            return [dict(c.summary(), certificate=c.cert_pem(), private_key=c.key_pem()) for c in self.certs.values()]
