"""ExtensionsConfig (protocol.md §1.7) and extension manifests (§1.8) as typed records.

A document that is not an ExtensionsConfig at all raises DocumentError. A handler whose own
entries break the rules (empty state, PluginSettings version mismatch, several PluginSettings
or RuntimeSettings, several DependsOn for a single-config handler, single- and multi-config
settings mixed, a settings entry without seqNo) is kept with `invalid_reason` set, so the
extensions worker fails that handler alone and runs the others, as waagent does.

As waagent reads them: every entry of a RuntimeSettings' runtimeSettings array is one
ExtensionSettings (all with the element's seqNo); an ExtensionRuntimeSettings state other than
enabled/disabled is kept, lower-cased, for the worker to report; a GAFamily's RSM flags are None
when the element is absent ("absent" is not "false").

Protected settings stay the base64 CMS the platform sent: the agent never decrypts them; the
extension does, with <THUMBPRINT>.crt/.prv. `redacted` gives the document as waagent saves
it in history (SAS query strings and protectedSettings replaced).
"""

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from workers.platform.documents import (attribute, child, children, expect_root, parse_xml,
                                        text)
from workers.platform.errors import DocumentError
from redaction import MARK as REDACTED

DOC = "ExtensionsConfig"
STATES = ("enabled", "disabled", "uninstall")
BLOB_TYPES = ("BlockBlob", "PageBlob")
_TICKS_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)


def _flag(value: Optional[str]) -> bool:
    return (value or "").strip().lower() == "true"


def _optional_flag(value: Optional[str]) -> Optional[bool]:
    """None when the element is absent (waagent tells "absent" from "false" for the RSM flags)."""
    return None if value is None else _flag(value)


class GAFamily(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    name: str
    version: Optional[str]
    uris: Tuple[str, ...]
    from_version: Optional[str] = None
    # None: the document does not say (absent is not "false": waagent decides differently)
    is_version_from_rsm: Optional[bool] = None
    is_vm_enabled_for_rsm_upgrades: Optional[bool] = None


class ExtensionSettings(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """One settings entry: the single-config RuntimeSettings, or one multi-config extension."""
    sequence_number: int
    name: Optional[str]                       # multi-config extension name; None single-config
    state: str                                # enabled | disabled (multi-config), else enabled
    public_settings: Optional[Dict[str, Any]]
    protected_settings: Optional[str]         # base64 CMS, never decrypted by the agent
    certificate_thumbprint: Optional[str]
    dependency_level: int = 0
    parsed: bool = True                       # False: the JSON did not parse ("no settings")

    def __repr__(self):  # protected settings never reach a log through repr
        return ("ExtensionSettings(name=%r, seq=%d, state=%r, thumbprint=%r, protected=%s)"
                % (self.name, self.sequence_number, self.state, self.certificate_thumbprint,
                   "yes" if self.protected_settings else "no"))


class ExtensionHandler(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    name: str
    version: str
    state: str
    manifest_uris: Tuple[str, ...]
    location: Optional[str] = None
    failover_location: Optional[str] = None
    additional_locations: Tuple[str, ...] = ()
    auto_upgrade: bool = False
    run_as_startup_task: bool = False
    is_json: bool = False
    use_exact_version: bool = False
    encoded_signature: Optional[str] = None
    is_multi_config: bool = False
    dependency_level: int = 0
    settings: Tuple[ExtensionSettings, ...] = ()
    invalid_reason: Optional[str] = None

    @property
    def valid(self) -> bool:
        return self.invalid_reason is None


class InVMGoalStateMetaData(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    in_svd_seq_no: Optional[str]
    created_on_ticks: int
    activity_id: Optional[str]
    correlation_id: Optional[str]

    @property
    def created_on(self) -> Optional[datetime]:
        """createdOnTicks (.NET ticks: 100 ns since 0001-01-01 UTC) as a datetime, None if 0 or
        out of range. Orders WireServer and FastTrack goal states (protocol.md §1.14)."""
        if self.created_on_ticks <= 0:
            return None
        try:
            return _TICKS_EPOCH + timedelta(microseconds=self.created_on_ticks // 10)
        except OverflowError:
            return None


class ExtensionsConfig(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    incarnation: Optional[str]
    ga_families: Tuple[GAFamily, ...]
    handlers: Tuple[ExtensionHandler, ...]
    required_features: Tuple[str, ...]
    status_upload_blob: Optional[str]
    status_blob_type: str
    artifacts_profile_blob: Optional[str]
    metadata: Optional[InVMGoalStateMetaData]
    xml: bytes = b""

    _unshown = ("xml",)   # not in repr: no document (SAS, protectedSettings) in a log line

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (name, getattr(self, name)) for name in self._fields
            if name not in self._unshown))

    def handler(self, name: str) -> Optional[ExtensionHandler]:
        lowered = name.lower()
        return next((h for h in self.handlers if h.name.lower() == lowered), None)

    def ga_family(self, name: str) -> Optional[GAFamily]:
        return next((f for f in self.ga_families if f.name == name), None)

    @property
    def redacted(self) -> bytes:
        """The document as saved in history, whichever its source (vmSettings overrides it)."""
        return redact_extensions_config(self.xml)


def _raw_text(element, name: str) -> Optional[str]:
    """The text of a child, "" when it is present but empty, None when absent."""
    node = child(element, name)
    return None if node is None else (node.text or "")


def _int(value: Optional[str], what: str) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        raise ValueError("%s is not a number: %r" % (what, (value or "")[:32])) from None


def _level(dep) -> int:
    """A DependsOn's dependencyLevel; an empty <DependsOn /> is level 0."""
    value = attribute(dep, "dependencyLevel")
    if value is None or not value.strip():
        return 0
    return _int(value, "DependsOn dependencyLevel")


# Entries of one runtimeSettings array kept (waagent keeps every one; real documents have one).
MAX_RUNTIME_SETTINGS_ENTRIES = 64


def _settings_json(raw: Optional[str]):
    """[(public, protected, thumbprint, parsed)] from a RuntimeSettings JSON text: one item
    per entry of its runtimeSettings array (waagent keeps every one), or one unparsed item
    ("no settings") when the text is not that shape."""
    if raw is None or not raw.strip():
        return [(None, None, None, True)]
    try:
        doc = json.loads(raw)
        entries = doc["runtimeSettings"]
        if not isinstance(entries, list) or len(entries) > MAX_RUNTIME_SETTINGS_ENTRIES:
            raise TypeError
        handlers = [entry["handlerSettings"] for entry in entries]
        if not all(isinstance(h, dict) for h in handlers):
            raise TypeError
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        return [(None, None, None, False)]
    out = []
    for handler in handlers:
        public = handler.get("publicSettings")
        protected = handler.get("protectedSettings")
        thumbprint = handler.get("protectedSettingsCertThumbprint")
        out.append((public if isinstance(public, dict) else None,
                    protected if isinstance(protected, str) and protected else None,
                    thumbprint if isinstance(thumbprint, str) and thumbprint else None, True))
    return out


def _handler_settings(plugin_settings) -> dict:
    """The settings part of a handler from its one PluginSettings/Plugin element.

    Raises ValueError with the reason the handler is invalid.
    """
    single = list(children(plugin_settings, "RuntimeSettings"))
    multi = list(children(plugin_settings, "ExtensionRuntimeSettings"))
    depends = list(children(plugin_settings, "DependsOn"))
    if single and multi:
        raise ValueError("both RuntimeSettings and ExtensionRuntimeSettings (single- and "
                         "multi-config mixed)")
    if multi:
        levels = {}
        for dep in depends:
            level = _level(dep)
            levels[attribute(dep, "name") or ""] = level
        settings, names = [], []
        for entry in multi:
            seq = attribute(entry, "seqNo")
            if seq is None:
                raise ValueError("ExtensionRuntimeSettings without seqNo")
            name = attribute(entry, "name")
            if not name:
                raise ValueError("ExtensionRuntimeSettings without name")
            names.append(name)
            # enabled (the default) or disabled; anything else is kept, as waagent keeps it,
            # for the extensions worker to report rather than the handler to be lost.
            state = (attribute(entry, "state") or "").strip().lower()[:64] or "enabled"
            for public, protected, thumbprint, parsed in _settings_json(entry.text):
                settings.append(ExtensionSettings(_int(seq, "seqNo"), name, state, public,
                                                  protected, thumbprint, levels.get(name, 0),
                                                  parsed))
        if len(set(names)) != len(names):
            raise ValueError("several ExtensionRuntimeSettings with the same name")
        return {"is_multi_config": True, "settings": tuple(settings), "dependency_level": 0}
    if len(single) > 1:
        raise ValueError("%d RuntimeSettings for a single-config handler" % len(single))
    if len(depends) > 1:
        raise ValueError("%d DependsOn for a single-config handler" % len(depends))
    level = _level(depends[0]) if depends else 0
    settings = ()
    if single:
        seq = attribute(single[0], "seqNo")
        if seq is None:
            raise ValueError("RuntimeSettings without seqNo")
        settings = tuple(ExtensionSettings(_int(seq, "seqNo"), None, "enabled", public,
                                           protected, thumbprint, level, parsed)
                         for public, protected, thumbprint, parsed in
                         _settings_json(single[0].text))
    return {"is_multi_config": False, "settings": settings, "dependency_level": level}


def _handler(plugin, all_settings) -> ExtensionHandler:
    name = attribute(plugin, "name")
    if not name:
        raise DocumentError(DOC, "a Plugin without name")
    version = attribute(plugin, "version") or ""
    location = attribute(plugin, "location")
    failover = attribute(plugin, "failoverlocation")
    additional = tuple(a.text.strip() for a in
                       children(child(plugin, "additionalLocations"), "additionalLocation")
                       if a.text and a.text.strip())
    uris = tuple(u for u in (location, failover) if u) + additional
    state = (attribute(plugin, "state") or "").strip()
    fields = dict(
        name=name, version=version, state=state, manifest_uris=uris, location=location,
        failover_location=failover, additional_locations=additional,
        auto_upgrade=_flag(attribute(plugin, "autoUpgrade")),
        run_as_startup_task=_flag(attribute(plugin, "runAsStartupTask")),
        is_json=_flag(attribute(plugin, "isJson")),
        use_exact_version=_flag(attribute(plugin, "useExactVersion")),
        encoded_signature=attribute(plugin, "encodedSignature") or None,
    )
    reason = None
    if not version:
        reason = "Plugin without version"
    elif state not in STATES:
        reason = "Plugin state is %r, expected one of %s" % (state, ", ".join(STATES))
    mine = [s for s in all_settings if (attribute(s, "name") or "").lower() == name.lower()]
    if reason is None and mine:
        same_version = [s for s in mine if attribute(s, "version") == version]
        if not same_version:
            reason = "PluginSettings Version Mismatch: %s has %s, PluginSettings have %s" % (
                name, version, ", ".join(sorted({attribute(s, "version") or "?" for s in mine})))
        elif len(same_version) > 1:
            reason = "%d PluginSettings for %s %s" % (len(same_version), name, version)
        else:
            try:
                fields.update(_handler_settings(same_version[0]))
            except ValueError as e:
                reason = str(e)
    return ExtensionHandler(invalid_reason=reason, **fields)


def _metadata(root) -> Optional[InVMGoalStateMetaData]:
    node = child(root, "InVMGoalStateMetaData")
    if node is None:
        return None
    try:
        ticks = int(attribute(node, "createdOnTicks") or "0")
    except ValueError:
        ticks = 0
    return InVMGoalStateMetaData(attribute(node, "inSvdSeqNo") or None, ticks,
                                 attribute(node, "activityId") or None,
                                 attribute(node, "correlationId") or None)


def parse_extensions_config(data) -> ExtensionsConfig:
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    root = parse_xml(raw, DOC)
    expect_root(root, DOC, "Extensions")
    families = []
    for fam in children(child(root, "GuestAgentExtension", "GAFamilies"), "GAFamily"):
        name = text(fam, "Name")
        if not name:
            raise DocumentError(DOC, "a GAFamily without Name")
        families.append(GAFamily(
            name, text(fam, "Version"),
            tuple(u.text.strip() for u in children(child(fam, "Uris"), "Uri")
                  if u.text and u.text.strip()),
            text(fam, "FromVersion"), _optional_flag(_raw_text(fam, "IsVersionFromRSM")),
            _optional_flag(_raw_text(fam, "IsVMEnabledForRSMUpgrades"))))
    all_settings = list(children(child(root, "PluginSettings"), "Plugin"))
    handlers = tuple(_handler(p, all_settings) for p in children(child(root, "Plugins"), "Plugin"))
    features = tuple(n for n in (text(f, "Name") for f in
                                 children(child(root, "RequiredFeatures"), "RequiredFeature")) if n)
    blob = child(root, "StatusUploadBlob")
    blob_type = attribute(blob, "statusBlobType") or "BlockBlob"
    if blob_type not in BLOB_TYPES:
        blob_type = "BlockBlob"     # as waagent: an unknown type is uploaded as a block blob
    return ExtensionsConfig(
        incarnation=attribute(root, "goalStateIncarnation"),
        ga_families=tuple(families),
        handlers=handlers,
        required_features=features,
        status_upload_blob=text(root, "StatusUploadBlob"),
        status_blob_type=blob_type,
        artifacts_profile_blob=text(root, "InVMArtifactsProfileBlob"),
        metadata=_metadata(root),
        xml=raw,
    )


_BLOB_QUERY = re.compile(
    rb"(<(StatusUploadBlob|InVMArtifactsProfileBlob)\b[^>]*>[^<?]*\?)([^<]*)(</)")
_PROTECTED = re.compile(rb'("protectedSettings"\s*:\s*")([^"]*)(")')


def redact_extensions_config(xml: bytes) -> bytes:
    """The document with blob SAS query strings and protectedSettings values replaced."""
    xml = _BLOB_QUERY.sub(lambda m: m.group(1) + REDACTED.encode() + m.group(4), xml)
    return _PROTECTED.sub(lambda m: m.group(1) + REDACTED.encode() + m.group(3), xml)


# --- Manifests (§1.8) -------------------------------------------------------------------------

class ManifestPackage(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    version: str
    uris: Tuple[str, ...]
    disallow_major_version_upgrade: bool = False
    internal: bool = False


def parse_manifest(data) -> Tuple[ManifestPackage, ...]:
    doc = "PluginVersionManifest"
    root = parse_xml(data, doc)
    expect_root(root, doc, doc)
    packages: List[ManifestPackage] = []
    for section, internal in (("Plugins", False), ("InternalPlugins", True)):
        for plugin in children(child(root, section), "Plugin"):
            version = text(plugin, "Version")
            if not version:
                raise DocumentError(doc, "a Plugin without Version")
            uris = tuple(u.text.strip() for u in children(child(plugin, "Uris"), "Uri")
                         if u.text and u.text.strip())
            packages.append(ManifestPackage(version, uris,
                                            _flag(text(plugin, "DisallowMajorVersionUpgrade")),
                                            internal))
    return tuple(packages)
