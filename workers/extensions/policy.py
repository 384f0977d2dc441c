"""The extension policy file (protocol.md §4.1; waagent's ga/policy/policy_engine.py).

Enforced when Debug.EnableExtensionPolicy=y and Policy.PolicyFilePath (default
/etc/waagent_policy.json) exists:

    {"policyVersion": "0.1.0",
     "extensionPolicies": {"allowListedExtensionsOnly": bool, "signatureRequired": bool,
                           "extensions": {"<Name>": {"signatureRequired": bool,
                                                     "runtimePolicy": any}}}}

Every attribute but policyVersion is optional; an unknown attribute, a wrong type or a
policyVersion above 0.1.0 makes the file invalid, and an invalid file blocks every extension
(waagent's InvalidPolicyError), with the reason in the blob. Extension names are matched
case-insensitively.

signatureRequired: guestagent does not validate package signatures (Debug.
EnableSignatureValidation is not applied), so an extension the policy requires a signature
of is blocked — never run unchecked — and the blob says why.
"""

import json
import re
from typing import Optional

MAX_POLICY_VERSION = (0, 1, 0)
MAX_BYTES = 1024 * 1024


class InvalidPolicy(Exception):
    pass


class Policy:
    def __init__(self, path: str, doc: Optional[dict] = None, error: Optional[str] = None):
        self.path = path
        self.error = error
        ext = (doc or {}).get("extensionPolicies", {})
        self.allow_listed_only = ext.get("allowListedExtensionsOnly", False)
        self.signature_required = ext.get("signatureRequired", False)
        self.extensions = {k.lower(): v for k, v in ext.get("extensions", {}).items()}

    def refusal(self, name: str) -> Optional[str]:
        """Why `name` may not be installed or run under this policy (None: it may)."""
        if self.error is not None:
            return ("Extension will not be processed: the policy file ('%s') is invalid, "
                    "please correct the following error: %s" % (self.path, self.error))
        mine = self.extensions.get(name.lower())
        if self.allow_listed_only and mine is None:
            return ("Extension will not be processed: failed to run extension '%s' because it "
                    "is not specified as an allowed extension. To enable, add the extension to "
                    "the list of allowed extensions in the policy file ('%s')." % (name,
                                                                                  self.path))
        required = mine.get("signatureRequired") if mine else None
        if required is None:
            required = self.signature_required
        if required:
            return ("Extension will not be processed: the policy file ('%s') requires a "
                    "signature for extension '%s', and this agent does not validate extension "
                    "signatures." % (self.path, name))
        return None


def load(conf) -> Optional[Policy]:
    """The policy in force, or None (not enabled, or no file)."""
    if not conf["Debug.EnableExtensionPolicy"]:
        return None
    path = conf["Policy.PolicyFilePath"]
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        return Policy(path, error="unable to read the policy file: %s" % e.strerror)
    try:
        if len(data) > MAX_BYTES:
            raise InvalidPolicy("the policy file is larger than %d bytes" % MAX_BYTES)
        try:
            doc = json.loads(data.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError):
            raise InvalidPolicy("policy file does not conform to valid json syntax.") from None
        return Policy(path, parse(doc))
    except InvalidPolicy as e:
        return Policy(path, error=str(e))


def _only(obj: dict, name: str, allowed) -> None:
    for k in obj:
        if k not in allowed:
            raise InvalidPolicy("unrecognized attribute '%s' in %s" % (k, name))


def _typed(obj: dict, key: str, prefix: str, kind, kind_name: str, optional=True):
    value = obj.get(key)
    if value is None:
        if not optional:
            raise InvalidPolicy("missing required attribute '%s%s'" % (prefix, key))
        return None
    if not isinstance(value, kind):
        raise InvalidPolicy("invalid type %s for attribute '%s%s'; must be '%s'" % (
            type(value).__name__, prefix, key, kind_name))
    return value


def parse(doc) -> dict:
    if not isinstance(doc, dict):
        raise InvalidPolicy("expected an object describing a Policy; got %s." % type(doc).__name__)
    _only(doc, "policy", ("policyVersion", "extensionPolicies"))
    version = _typed(doc, "policyVersion", "", str, "string", optional=False)
    if not re.fullmatch(r"\d+(\.\d+(\.\d+)?)?", version):
        raise InvalidPolicy("invalid value for attribute 'policyVersion': '%s'" % version[:40])
    parts = tuple(int(p) for p in version.split("."))
    if parts + (0,) * (3 - len(parts)) > MAX_POLICY_VERSION:
        raise InvalidPolicy("policy version '%s' is not supported. The agent supports policy "
                            "versions up to '0.1.0'." % version)
    ext = _typed(doc, "extensionPolicies", "", dict, "object") or {}
    _only(ext, "extensionPolicies", ("allowListedExtensionsOnly", "signatureRequired",
                                     "extensions"))
    out = {}
    for key in ("allowListedExtensionsOnly", "signatureRequired"):
        value = _typed(ext, key, "extensionPolicies.", bool, "boolean")
        if value is not None:
            out[key] = value
    extensions = _typed(ext, "extensions", "extensionPolicies.", dict, "object") or {}
    parsed = {}
    for name, one in extensions.items():
        prefix = "extensionPolicies.extensions.%s" % name
        if not isinstance(one, dict):
            raise InvalidPolicy("invalid type %s for attribute '%s'; must be 'object'" % (
                type(one).__name__, prefix))
        _only(one, prefix, ("signatureRequired", "runtimePolicy"))
        entry = {}
        value = _typed(one, "signatureRequired", prefix + ".", bool, "boolean")
        if value is not None:
            entry["signatureRequired"] = value
        parsed[name] = entry
    out["extensions"] = parsed
    return {"policyVersion": version, "extensionPolicies": out}

