"""The HostGAPlugin vmSettings (FastTrack) document (protocol.md §1.14) as typed records.

It parses into the records of workers.platform.extensionsconfig: `VmSettingsGoalState` is an
ExtensionsConfig (GAFamily, ExtensionHandler with ExtensionSettings, required features, status
upload blob, InVMGoalStateMetaData with the created-on ticks and ids) plus what only vmSettings
carries (source, HostGAPlugin version, onHold, inVMMetadata, the ETag), so the extensions worker
reads one shape whichever channel the goal state came from.

The rules, as ExtensionsConfig:
- a document that is not a vmSettings at all (not JSON, not an object, no hostGAPluginVersion,
  a top-level member of the wrong type, an extension goal state or GA family without a name),
  or whose multi-config dependsOn names an extension that is not in the handler's settings (as
  waagent refuses it), raises DocumentError with the reason: the caller keeps its
  last-known-good goal state;
- a handler whose own entries break the rules is kept with `invalid_reason` set (state not
  enabled/disabled/uninstall, several settings for a single-config handler, a single-config
  dependsOn that is not exactly one item, protectedSettings without a certificate thumbprint,
  a multi-config settings entry without extensionName or seqNo, ...): the extensions worker
  fails that handler alone and runs the others;
- publicSettings is a JSON *string*; one that does not parse to an object keeps the extension
  "with no settings" (`parsed=False`), as an unparsable RuntimeSettings does.

Single-config: the sequence number is the handler's settingsSeqNo, the state the handler's and
the dependency level the one dependsOn item's dependencyLevel (an empty list is level 0).
Multi-config: each settings entry has its own seqNo, extensionName and extensionState (absent:
enabled; a value other than enabled/disabled is kept, lower-cased, as waagent keeps it); dependsOn
items are keyed by name. A GA family's RSM flags are None when absent (not False).
Member names are matched case-insensitively: the HostGAPlugin is not consistent about them
("StatusUploadBlob", "Name", "failoverLocation").

`source == "Fabric"` (`is_fabric`) means the document only mirrors the WireServer's
ExtensionsConfig: the caller ignores it. The HostGAPlugin version check (>= 1.0.8.133, else
"unsupported") stays in hostplugin.py; the parser records the version it was given.

Protected settings stay the base64 CMS the platform sent, never decrypted here, never in a repr
(ExtensionSettings.__repr__). `redacted` gives the document as it may be saved in history:
protectedSettings values and URL query strings (SAS) replaced.
"""

import collections
import json
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from workers.platform.errors import DocumentError
from workers.platform.extensionsconfig import (BLOB_TYPES, STATES, ExtensionHandler,
                                               ExtensionsConfig, ExtensionSettings, GAFamily,
                                               InVMGoalStateMetaData)
from redaction import MARK as REDACTED

DOC = "vmSettings"
FABRIC = "Fabric"
FASTTRACK = "FastTrack"
MULTI_CONFIG_STATES = ("enabled", "disabled")
MAX_TICKS = 3155378975999999999       # .NET DateTime.MaxValue.Ticks (9999-12-31T23:59:59.9999999)
MAX_SEQ_NO = 2 ** 63 - 1
MAX_LEVEL = 2 ** 31 - 1


class InVMMetadata(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """vmSettings' inVMMetadata: informational, never trusted for anything."""
    subscription_id: Optional[str] = None
    resource_group_name: Optional[str] = None
    vm_name: Optional[str] = None
    location: Optional[str] = None
    vm_id: Optional[str] = None
    vm_size: Optional[str] = None
    os_type: Optional[str] = None


# Not a dataclass (see spawner/zygote.py PRELOAD), and a NamedTuple adds no fields to another:
# VmSettingsGoalState's are ExtensionsConfig's, in its order, then vmSettings' own (name,
# default); its methods are ExtensionsConfig's, of which it is still a subclass.
_OWN_FIELDS = (("etag", None), ("host_ga_plugin_version", ""), ("schema_version", None),
               ("source", "UNKNOWN"), ("on_hold", False), ("in_vm_metadata", None),
               ("raw", b""))
_VmSettingsFields = collections.namedtuple(
    "_VmSettingsFields", ExtensionsConfig._fields + tuple(n for n, _ in _OWN_FIELDS),
    defaults=tuple(ExtensionsConfig._field_defaults.values())
    + tuple(d for _, d in _OWN_FIELDS))


class VmSettingsGoalState(_VmSettingsFields, ExtensionsConfig):
    """An ExtensionsConfig read from vmSettings (`incarnation` and `artifacts_profile_blob` are
    None: vmSettings has neither; `on_hold` replaces the artifacts profile)."""
    __slots__ = ()
    _unshown = ("xml", "raw")
    __repr__ = ExtensionsConfig.__repr__

    @property
    def is_fabric(self) -> bool:
        """A mirror of the WireServer's ExtensionsConfig: ignore it, use ExtensionsConfig."""
        return self.source.lower() == FABRIC.lower()

    @property
    def redacted(self) -> bytes:
        return redact_vm_settings(self.raw)


# --- reading JSON values without trusting them ------------------------------------------------

def _fold(obj: dict) -> Dict[str, Any]:
    """The members of a JSON object with case-folded names (one level)."""
    return {k.casefold(): v for k, v in obj.items() if isinstance(k, str)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str(obj: dict, key: str, what: str, required: bool = False) -> Optional[str]:
    """A string member (or None); anything else is an error raised as ValueError."""
    value = obj.get(key.casefold())
    if value is None:
        if required:
            raise ValueError("%s without %s" % (what, key))
        return None
    if not isinstance(value, str):
        raise ValueError("%s %s is a %s, not a string" % (what, key, type(value).__name__))
    if required and not value.strip():
        raise ValueError("%s with an empty %s" % (what, key))
    return value


def _flag(obj: dict, key: str, what: str) -> bool:
    value = obj.get(key.casefold())
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("%s %s is not a boolean" % (what, key))


def _optional_flag(obj: dict, key: str, what: str) -> Optional[bool]:
    """A boolean member, None when absent (absent is not false: the RSM flags)."""
    if obj.get(key.casefold()) is None:
        return None
    return _flag(obj, key, what)


def _list(obj: dict, key: str, what: str) -> List[Any]:
    value = obj.get(key.casefold())
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("%s %s is a %s, not an array" % (what, key, type(value).__name__))
    return value


def _strings(obj: dict, key: str, what: str) -> Tuple[str, ...]:
    items = _list(obj, key, what)
    if not all(isinstance(i, str) for i in items):
        raise ValueError("%s %s holds something other than strings" % (what, key))
    return tuple(i.strip() for i in items if i.strip())


def _object(value, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("%s is a %s, not an object" % (what, type(value).__name__))
    return _fold(value)


def _number(obj: dict, key: str, what: str, low: int, high: int,
            default: Optional[int] = None) -> int:
    """An integer member within [low, high]; a decimal string is accepted too."""
    value = obj.get(key.casefold())
    if value is None:
        if default is None:
            raise ValueError("%s without %s" % (what, key))
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value):
        value = int(value)
    if not _is_int(value):
        raise ValueError("%s %s is not an integer" % (what, key))
    if not low <= value <= high:
        raise ValueError("%s %s is out of range" % (what, key))
    return value


# --- extension goal states ----------------------------------------------------------------------

def _public_settings(entry: dict, what: str):
    """(public settings dict or None, parsed) from the publicSettings JSON string."""
    value = entry.get("publicsettings")
    if value is None:
        return None, True
    if not isinstance(value, str):
        return None, False
    if not value.strip():
        return None, True
    try:
        public = json.loads(value)
    except (ValueError, RecursionError):
        return None, False
    if not isinstance(public, dict):
        return None, False
    return public, True


def _protected(entry: dict, what: str):
    """(protectedSettings, thumbprint); protected settings without a thumbprint are an error."""
    protected = _str(entry, "protectedSettings", what)
    thumbprint = _str(entry, "protectedSettingsCertThumbprint", what)
    protected = protected if protected and protected.strip() else None
    thumbprint = thumbprint.strip() if thumbprint and thumbprint.strip() else None
    if protected and not thumbprint:
        raise ValueError("%s has protectedSettings without protectedSettingsCertThumbprint" % what)
    return protected, thumbprint


def _single_config(name: str, egs: dict, settings_list: list, state: str) -> dict:
    if len(settings_list) > 1:
        raise ValueError("%d settings for the single-config handler %s"
                         % (len(settings_list), name))
    depends = _list(egs, "dependsOn", name)
    if len(depends) > 1:
        raise ValueError("dependsOn of the single-config handler %s has %d items, expected one"
                         % (name, len(depends)))
    level = 0
    if depends:
        item = _object(depends[0], "dependsOn of %s" % name)
        level = _number(item, "dependencyLevel", "dependsOn of %s" % name, -MAX_LEVEL, MAX_LEVEL)
    settings: Tuple[ExtensionSettings, ...] = ()
    if settings_list:
        entry = _object(settings_list[0], "settings of %s" % name)
        seq = _number(egs, "settingsSeqNo", name, 0, MAX_SEQ_NO)
        protected, thumbprint = _protected(entry, "settings of %s" % name)
        public, parsed = _public_settings(entry, name)
        # a single-config handler's settings take the handler's state, as in waagent
        settings = (ExtensionSettings(seq, None, state, public, protected, thumbprint, level,
                                      parsed),)
    return {"is_multi_config": False, "settings": settings, "dependency_level": level}


def _multi_config(name: str, egs: dict, settings_list: list) -> dict:
    levels: Dict[str, int] = {}
    for item in _list(egs, "dependsOn", name):
        item = _object(item, "dependsOn of %s" % name)
        ext = _str(item, "name", "a dependsOn item of the multi-config handler %s" % name,
                   required=True)
        levels[ext] = _number(item, "dependencyLevel", "dependsOn %s of %s" % (ext, name),
                              -MAX_LEVEL, MAX_LEVEL)
    settings = []
    for entry in settings_list:
        entry = _object(entry, "settings of %s" % name)
        ext = _str(entry, "extensionName", "a settings entry of the multi-config handler %s" % name,
                   required=True)
        what = "settings %s of %s" % (ext, name)
        seq = _number(entry, "seqNo", what, 0, MAX_SEQ_NO)
        # enabled or disabled; anything else is kept (lower-cased) for the worker to report,
        # as waagent keeps it
        state = (_str(entry, "extensionState", what) or "").strip().lower()[:64] or "enabled"
        protected, thumbprint = _protected(entry, what)
        public, parsed = _public_settings(entry, what)
        settings.append(ExtensionSettings(seq, ext, state, public, protected, thumbprint,
                                          levels.get(ext, 0), parsed))
    if len({s.name for s in settings}) != len(settings):
        raise ValueError("several settings with the same extensionName for %s" % name)
    unknown = sorted(set(levels) - {s.name for s in settings})
    if unknown:
        # waagent refuses the whole vmSettings document for this, not the handler alone
        raise _WholeDocument("dependsOn %r of the multi-config handler %s names no extension "
                             "of its settings" % (unknown[0][:64], name))
    return {"is_multi_config": True, "settings": tuple(settings), "dependency_level": 0}


class _WholeDocument(Exception):
    """A rule whose breach invalidates the whole document (DocumentError), not one handler."""


def _handler(egs) -> ExtensionHandler:
    if not isinstance(egs, dict):
        raise DocumentError(DOC, "an extensionGoalStates item is a %s, not an object"
                            % type(egs).__name__)
    egs = _fold(egs)
    name = egs.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DocumentError(DOC, "an extensionGoalStates item without name")
    name = name.strip()
    fields: Dict[str, Any] = dict(name=name, version="", state="", manifest_uris=())
    try:
        version = (_str(egs, "version", name) or "").strip()
        state = (_str(egs, "state", name) or "").strip()
        fields.update(version=version, state=state)
        location = _str(egs, "location", name)
        failover = _str(egs, "failoverLocation", name)
        additional = _strings(egs, "additionalLocations", name)
        location = location.strip() if location and location.strip() else None
        failover = failover.strip() if failover and failover.strip() else None
        fields.update(
            manifest_uris=tuple(u for u in (location, failover) if u) + additional,
            location=location, failover_location=failover, additional_locations=additional,
            auto_upgrade=_flag(egs, "autoUpgrade", name),
            run_as_startup_task=_flag(egs, "runAsStartupTask", name),
            is_json=_flag(egs, "isJson", name),
            use_exact_version=_flag(egs, "useExactVersion", name),
            encoded_signature=(_str(egs, "encodedSignature", name) or "").strip() or None,
        )
        if not version:
            raise ValueError("%s without version" % name)
        if state not in STATES:
            raise ValueError("%s state is %r, expected one of %s"
                             % (name, state[:32], ", ".join(STATES)))
        settings_list = _list(egs, "settings", name)
        if _flag(egs, "isMultiConfig", name):
            fields.update(_multi_config(name, egs, settings_list))
        else:
            fields.update(_single_config(name, egs, settings_list, state))
    except ValueError as e:
        return ExtensionHandler(invalid_reason=str(e), **fields)
    return ExtensionHandler(**fields)


# --- the document -------------------------------------------------------------------------------

def _families(root: dict) -> Tuple[GAFamily, ...]:
    families = []
    for fam in _list(root, "gaFamilies", DOC):
        fam = _object(fam, "a gaFamilies item")
        name = _str(fam, "name", "a GA family", required=True).strip()
        version = (_str(fam, "version", "GA family %s" % name) or "").strip() or None
        from_version = (_str(fam, "fromVersion", "GA family %s" % name) or "").strip() or None
        families.append(GAFamily(name, version, _strings(fam, "uris", "GA family %s" % name),
                                 from_version, _optional_flag(fam, "isVersionFromRSM", name),
                                 _optional_flag(fam, "isVMEnabledForRSMUpgrades", name)))
    return tuple(families)


def _features(root: dict) -> Tuple[str, ...]:
    names = []
    for feature in _list(root, "requiredFeatures", DOC):
        feature = _object(feature, "a requiredFeatures item")
        names.append(_str(feature, "name", "a required feature", required=True).strip())
    return tuple(names)


def _status_blob(root: dict):
    blob = root.get("statusuploadblob")
    if blob is None:
        return None, "BlockBlob"
    blob = _object(blob, "statusUploadBlob")
    url = _str(blob, "value", "statusUploadBlob", required=True).strip()
    blob_type = (_str(blob, "statusBlobType", "statusUploadBlob") or "").strip()
    if blob_type not in BLOB_TYPES:
        blob_type = "BlockBlob"     # as waagent: an unknown type is uploaded as a block blob
    return url, blob_type


def _in_vm_metadata(root: dict) -> Optional[InVMMetadata]:
    node = root.get("invmmetadata")
    if node is None:
        return None
    node = _object(node, "inVMMetadata")
    keys = ("subscriptionId", "resourceGroupName", "vmName", "location", "vmId", "vmSize",
            "osType")
    return InVMMetadata(*(_str(node, k, "inVMMetadata") for k in keys))


def _metadata(root: dict) -> InVMGoalStateMetaData:
    seq = root.get("insvdseqno")
    if seq is not None and not (_is_int(seq) or isinstance(seq, str)):
        raise ValueError("inSvdSeqNo is neither a number nor a string")
    ticks = _number(root, "extensionsLastModifiedTickCount", DOC, 0, MAX_TICKS, default=0)
    return InVMGoalStateMetaData(str(seq) if seq is not None and str(seq).strip() else None,
                                 ticks, _str(root, "activityId", DOC) or None,
                                 _str(root, "correlationId", DOC) or None)


def _decode(data) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DocumentError(DOC, "not UTF-8") from None
    if not isinstance(data, str):
        raise DocumentError(DOC, "not a text document")
    try:
        return json.loads(data)
    except RecursionError:
        raise DocumentError(DOC, "nested too deeply") from None
    except ValueError as e:
        raise DocumentError(DOC, "not JSON (%s)" % str(e)[:80]) from None


def decode_vm_settings(data) -> Any:
    """The JSON value of a vmSettings body (any JSON value); DocumentError if not JSON."""
    return _decode(data)


def parse_vm_settings(data, etag: Optional[str] = None,
                      document: Any = None) -> VmSettingsGoalState:
    """The vmSettings JSON (bytes or str) as a VmSettingsGoalState; DocumentError if unusable.

    `document` is the body already decoded by decode_vm_settings, to skip decoding it twice.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if document is None:
        document = _decode(raw)
    if not isinstance(document, dict):
        raise DocumentError(DOC, "not a JSON object but a %s" % type(document).__name__)
    root = _fold(document)
    try:
        version = _str(root, "hostGAPluginVersion", DOC)
        if version is None or not version.strip():
            raise DocumentError(DOC, "no hostGAPluginVersion: not a vmSettings document")
        source = (_str(root, "extensionGoalStatesSource", DOC) or "").strip() or "UNKNOWN"
        url, blob_type = _status_blob(root)
        goal_states = _list(root, "extensionGoalStates", DOC)
        return VmSettingsGoalState(
            incarnation=None,
            ga_families=_families(root),
            handlers=tuple(_handler(egs) for egs in goal_states),
            required_features=_features(root),
            status_upload_blob=url,
            status_blob_type=blob_type,
            artifacts_profile_blob=None,
            metadata=_metadata(root),
            etag=etag,
            host_ga_plugin_version=version.strip(),
            schema_version=(_str(root, "vmSettingsSchemaVersion", DOC) or "").strip() or None,
            source=source,
            on_hold=_flag(root, "onHold", DOC),
            in_vm_metadata=_in_vm_metadata(root),
            raw=raw,
        )
    except (ValueError, _WholeDocument) as e:
        raise DocumentError(DOC, str(e)) from None


# --- redaction ----------------------------------------------------------------------------------

_PROTECTED = re.compile(rb'(?i)("protectedSettings"\s*:\s*")((?:[^"\\]|\\.)*)(")')
_URL_QUERY = re.compile(rb'(https?://[^"?\s\\]*\?)((?:[^"\\]|\\.)*)(")')


def redact_vm_settings(raw: bytes) -> bytes:
    """The document with every protectedSettings value and URL query string (SAS) replaced,
    its layout otherwise untouched (as waagent saves it in history)."""
    raw = _PROTECTED.sub(lambda m: m.group(1) + REDACTED.encode() + m.group(3), raw)
    return _URL_QUERY.sub(lambda m: m.group(1) + REDACTED.encode() + m.group(3), raw)
