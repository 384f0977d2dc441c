"""The extension policy file's parsing (waagent's policy_engine rules) and the manifest's
resourceLimits CPU quota, as the broker reads it."""

import json

import pytest

from supervisor.privileged.extensions import _cpu_quota
from workers.extensions.policy import InvalidPolicy, Policy, parse


@pytest.mark.parametrize("doc, error", [
    ([], "expected an object describing a Policy; got list"),
    ({}, "missing required attribute 'policyVersion'"),
    ({"policyVersion": "0.2.0"}, "policy version '0.2.0' is not supported"),
    ({"policyVersion": "1"}, "policy version '1' is not supported"),
    ({"policyVersion": "0.1.x"}, "invalid value for attribute 'policyVersion'"),
    ({"policyVersion": "0.1.0", "other": 1}, "unrecognized attribute 'other' in policy"),
    ({"policyVersion": "0.1.0", "extensionPolicies": {"extensions": {"A": []}}},
     "invalid type list for attribute 'extensionPolicies.extensions.A'; must be 'object'"),
    ({"policyVersion": "0.1.0", "extensionPolicies": {"extensions": {"A": {"x": 1}}}},
     "unrecognized attribute 'x' in extensionPolicies.extensions.A"),
    ({"policyVersion": "0.1.0", "extensionPolicies": {"signatureRequired": 1}},
     "invalid type int for attribute 'extensionPolicies.signatureRequired'; must be 'boolean'"),
])
def test_an_invalid_policy_says_what_is_wrong(doc, error):
    with pytest.raises(InvalidPolicy) as e:
        parse(doc)
    assert error in str(e.value)


def test_the_policy_decides_by_name_case_insensitively():
    p = Policy("/p.json", parse({"policyVersion": "0.1", "extensionPolicies": {
        "allowListedExtensionsOnly": True,
        "extensions": {"A.B": {}, "C.D": {"signatureRequired": True,
                                          "runtimePolicy": {"any": ["thing"]}}}}}))
    assert p.refusal("a.b") is None
    assert "not specified as an allowed extension" in p.refusal("X.Y")
    assert "requires a signature for extension 'C.D'" in p.refusal("C.D")
    assert Policy("/p.json", parse({"policyVersion": "0.1.0"})).refusal("X.Y") is None
    assert "is invalid" in Policy("/p.json", error="bad").refusal("A.B")


def _manifest(limits):
    return json.dumps([{"name": "X", "version": 1.0, "handlerManifest": {},
                        "resourceLimits": limits}]).encode()


@pytest.mark.parametrize("limits, quota", [
    ({"cpuQuotaPercentage": 20}, 20), ({"cpuQuotaPercentage": "35"}, 35),
    ({"cpuQuotaPercentage": 0}, None), ({"cpuQuotaPercentage": -5}, None),
    ({"cpuQuotaPercentage": 12.5}, None), ({"cpuQuotaPercentage": True}, None),
    ({"cpuQuotaPercentage": 10 ** 9}, None), ({"memoryQuotaInMB": 100}, None),
    (None, None), ("50", None),
])
def test_the_cpu_quota_is_a_whole_percent_or_none(limits, quota):
    assert _cpu_quota(_manifest(limits)) == quota
