"""Renderers for the WireServer / HostGAPlugin / IMDS documents of protocol.md §1.

Each takes plain values and returns text; the shapes and element order follow the recorded
documents in tests/data/walinuxagent so a parser written against those reads these.
"""
import json
from xml.sax.saxutils import escape, quoteattr

WS_VERSION = "2012-11-30"
HGAP_VERSION = "2015-09-01"


def versions():
    return ('<?xml version="1.0" encoding="utf-8"?>\n<Versions>\n  <Preferred>\n    <Version>%s</Version>\n'
            '  </Preferred>\n  <Supported>\n    <Version>%s</Version>\n    <Version>2010-12-15</Version>\n'
            '    <Version>2010-28-10</Version>\n  </Supported>\n</Versions>' % (WS_VERSION, WS_VERSION))


def goal_state(incarnation, container_id, role_instance_id, urls, config_name, with_certificates=True,
               with_extensions=True, remote_access_url=None):
    """urls: dict of hostingEnvironmentConfig, sharedConfig, extensionsConfig, fullConfig, certificates."""
    conf = ['         <HostingEnvironmentConfig>%s</HostingEnvironmentConfig>' % escape(urls["hostingEnvironmentConfig"]),
            '          <SharedConfig>%s</SharedConfig>' % escape(urls["sharedConfig"])]
    if with_extensions:
        conf.append('          <ExtensionsConfig>%s</ExtensionsConfig>' % escape(urls["extensionsConfig"]))
    conf.append('          <FullConfig>%s</FullConfig>' % escape(urls["fullConfig"]))
    if with_certificates:
        conf.append('          <Certificates>%s</Certificates>' % escape(urls["certificates"]))
    conf.append('          <ConfigName>%s</ConfigName>' % escape(config_name))
    remote = ('     <RemoteAccessInfo>%s</RemoteAccessInfo>\n' % escape(remote_access_url)) if remote_access_url else ""
    return """<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
   <Version>2010-12-15</Version>
   <Incarnation>%s</Incarnation>
   <Machine>
     <ExpectedState>Started</ExpectedState>
     <LBProbePorts>
       <Port>16001</Port>
     </LBProbePorts>
   </Machine>
   <Container>
     <ContainerId>%s</ContainerId>
%s     <RoleInstanceList>
       <RoleInstance>
         <InstanceId>%s</InstanceId>
         <State>Started</State>
         <Configuration>
%s
         </Configuration>
       </RoleInstance>
     </RoleInstanceList>
   </Container>
 </GoalState>
""" % (escape(str(incarnation)), escape(container_id), remote, escape(role_instance_id), "\n".join(conf))


def _deployment_block(deployment_name, incarnation, instance_name):
    return """   <Deployment name=%s guid="{ce5a036f-5c93-40e7-8adf-2613631008ab}" incarnation="%s">
     <Service name="GuestAgentEmulatorService" guid="{00000000-0000-0000-0000-000000000000}" />
     <ServiceInstance name=%s guid="{d113f4d7-9ead-4e73-b715-b724b5b7842c}" />
   </Deployment>
   <Incarnation number="%s" instance=%s guid="{a0faca35-52e5-4ec7-8fd1-63d2bc107d9b}" />""" % (
        quoteattr(deployment_name), escape(str(incarnation)), quoteattr(deployment_name + ".0"),
        escape(str(incarnation)), quoteattr(instance_name))


def hosting_environment_config(incarnation, deployment_name, role_name, instance_name):
    return """<HostingEnvironmentConfig version="1.0.0.0" goalStateIncarnation="%s">
   <StoredCertificates>
   </StoredCertificates>
%s
   <Role guid="{73d95f1c-6472-e58e-7a1a-523554e11d46}" name=%s hostingEnvironmentVersion="1" software="" softwareType="ApplicationPackage" entryPoint="" parameters="" settleTimeSeconds="10" />
   <HostingEnvironmentSettings name="full" runtime="rd_fabric_stable.runtimePackage_1.0.0.8.zip">
     <CAS mode="full" />
     <PrivilegeLevel mode="max" />
     <AdditionalProperties><CgiHandlers></CgiHandlers></AdditionalProperties>
   </HostingEnvironmentSettings>
   <ApplicationSettings>
   </ApplicationSettings>
   <ResourceReferences>
     <Resource name="DiagnosticStore" type="directory" request="Microsoft.Cis.Fabric.Controller.Descriptions.ServiceDescription.Data.Policy" sticky="true" size="1" path=%s disableQuota="false" />
   </ResourceReferences>
 </HostingEnvironmentConfig>
""" % (escape(str(incarnation)), _deployment_block(deployment_name, incarnation, instance_name),
       quoteattr(role_name), quoteattr("%s.%s.DiagnosticStore\\" % (deployment_name, role_name)))


def shared_config(incarnation, deployment_name, role_name, instance_name, address):
    return """<SharedConfig version="1.0.0.0" goalStateIncarnation="%s">
%s
   <Role guid="{73d95f1c-6472-e58e-7a1a-523554e11d46}" name=%s settleTimeSeconds="10" />
   <LoadBalancerSettings timeoutSeconds="0" waitLoadBalancerProbeCount="8">
     <Probes>
       <Probe name=%s />
     </Probes>
   </LoadBalancerSettings>
   <OutputEndpoints>
   </OutputEndpoints>
   <Instances>
     <Instance id=%s address=%s>
       <FaultDomains randomId="0" updateId="0" updateCount="0" />
       <InputEndpoints>
       </InputEndpoints>
     </Instance>
   </Instances>
 </SharedConfig>
""" % (escape(str(incarnation)), _deployment_block(deployment_name, incarnation, instance_name),
       quoteattr(role_name), quoteattr(role_name), quoteattr(instance_name), quoteattr(address))


def runtime_settings_json(public_settings, protected_settings_b64, thumbprint):
    handler_settings = {}
    if protected_settings_b64 is not None:
        handler_settings["protectedSettingsCertThumbprint"] = thumbprint
        handler_settings["protectedSettings"] = protected_settings_b64
    if public_settings is not None:
        handler_settings["publicSettings"] = public_settings
    return json.dumps({"runtimeSettings": [{"handlerSettings": handler_settings}]}, sort_keys=True)


def _bool(v):
    return "true" if v else "false"


def extensions_config(incarnation, plugins, status_blob_url, status_blob_type, metadata,
                      ga_families=(), required_features=(), artifacts_profile_url=None):
    """plugins: list of dicts with name, version, location, failover, additional (list), state,
    auto_upgrade, run_as_startup_task, encoded_signature, depends_on (list of dicts
    {level, handlers, name?}), settings: either {"seq_no", "json"} (single-config) or
    "multi": [{"name", "seq_no", "state", "json"}]."""
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<Extensions version="1.0.0.0" goalStateIncarnation="%s">'
           '<GuestAgentExtension xmlns:i="http://www.w3.org/2001/XMLSchema-instance">' % escape(str(incarnation)),
           '  <GAFamilies>']
    for fam in ga_families:
        out.append('    <GAFamily>')
        out.append('      <Name>%s</Name>' % escape(fam["name"]))
        if fam.get("version"):
            out.append('      <Version>%s</Version>' % escape(fam["version"]))
            out.append('      <IsVersionFromRSM>%s</IsVersionFromRSM>' % _bool(fam.get("is_version_from_rsm", False)))
            out.append('      <IsVMEnabledForRSMUpgrades>%s</IsVMEnabledForRSMUpgrades>'
                       % _bool(fam.get("is_vm_enabled_for_rsm_upgrades", False)))
        out.append('      <Uris>')
        for uri in fam["uris"]:
            out.append('        <Uri>%s</Uri>' % escape(uri))
        out.append('      </Uris>')
        out.append('    </GAFamily>')
    out.append('  </GAFamilies>')
    out.append('</GuestAgentExtension>')
    if required_features:
        out.append('<RequiredFeatures>')
        for name in required_features:
            out.append('  <RequiredFeature>\n    <Name>%s</Name>\n  </RequiredFeature>' % escape(name))
        out.append('</RequiredFeatures>')
    out.append('<Plugins>')
    for p in plugins:
        attrs = [("name", p["name"]), ("version", p["version"]), ("location", p["location"]), ("config", ""),
                 ("state", p["state"]), ("autoUpgrade", _bool(p.get("auto_upgrade"))),
                 ("failoverlocation", p["failover"]), ("runAsStartupTask", _bool(p.get("run_as_startup_task"))),
                 ("isJson", "true"), ("useExactVersion", "true")]
        if p.get("encoded_signature"):
            attrs.append(("encodedSignature", p["encoded_signature"]))
        head = '  <Plugin %s' % " ".join("%s=%s" % (k, quoteattr(v)) for k, v in attrs)
        if p.get("additional"):
            out.append(head + '>')
            out.append('    <additionalLocations>')
            for loc in p["additional"]:
                out.append('      <additionalLocation>%s</additionalLocation>' % escape(loc))
            out.append('    </additionalLocations>')
            out.append('  </Plugin>')
        else:
            out.append(head + ' />')
    out.append('</Plugins>')
    out.append('<PluginSettings>')
    for p in plugins:
        s = p.get("settings")
        if s is None:
            continue
        out.append('  <Plugin name=%s version=%s>' % (quoteattr(p["name"]), quoteattr(p["version"])))
        for dep in p.get("depends_on") or ():
            name_attr = (' name=%s' % quoteattr(dep["name"])) if dep.get("name") else ""
            out.append('    <DependsOn dependencyLevel="%d"%s>' % (int(dep["level"]), name_attr))
            for h in dep.get("handlers", ()):
                ext_attr = (' extension=%s' % quoteattr(h["extension"])) if h.get("extension") else ""
                out.append('      <DependsOnExtension%s handler=%s />' % (ext_attr, quoteattr(h["handler"])))
            out.append('    </DependsOn>')
        if "multi" in s:
            for e in s["multi"]:
                out.append('    <ExtensionRuntimeSettings seqNo="%d" name=%s state=%s>%s</ExtensionRuntimeSettings>' % (
                    int(e["seq_no"]), quoteattr(e["name"]), quoteattr(e["state"]), escape(e["json"])))
        else:
            out.append('    <RuntimeSettings seqNo="%d">%s</RuntimeSettings>' % (int(s["seq_no"]), escape(s["json"])))
        out.append('  </Plugin>')
    out.append('</PluginSettings>')
    if status_blob_url:
        out.append('<StatusUploadBlob statusBlobType=%s>%s</StatusUploadBlob>' % (
            quoteattr(status_blob_type), escape(status_blob_url)))
    if artifacts_profile_url:
        out.append('<InVMArtifactsProfileBlob>%s</InVMArtifactsProfileBlob>' % escape(artifacts_profile_url))
    out.append('<InVMGoalStateMetaData inSvdSeqNo=%s createdOnTicks=%s activityId=%s correlationId=%s />' % (
        quoteattr(str(metadata["in_svd_seq_no"])), quoteattr(str(metadata["created_on_ticks"])),
        quoteattr(metadata["activity_id"]), quoteattr(metadata["correlation_id"])))
    out.append('</Extensions>')
    return "\n".join(out) + "\n"


def certificates(incarnation, data_b64):
    """CertificateFile; data_b64 None → no Data element (no certificates)."""
    data = ""
    if data_b64:
        # 64-column lines as the recorded documents have them
        lines = [data_b64[i:i + 64] for i in range(0, len(data_b64), 64)]
        data = "  <Data>%s</Data>\n" % "\n".join(lines)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<CertificateFile xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:noNamespaceSchemaLocation="certificates10.xsd">\n'
            '  <Version>%s</Version>\n  <Incarnation>%s</Incarnation>\n'
            '  <Format>Pkcs7BlobWithPfxContents</Format>\n%s</CertificateFile>\n') % (
        WS_VERSION, escape(str(incarnation)), data)


def plugin_manifest(versions_and_uris):
    """PluginVersionManifest: [(version, [uri, ...]), ...]."""
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<PluginVersionManifest xmlns:i="http://www.w3.org/2001/XMLSchema-instance">', '    <Plugins>']
    for version, uris in versions_and_uris:
        out.append('        <Plugin>')
        out.append('            <Version>%s</Version>' % escape(version))
        out.append('            <Uris>')
        for u in uris:
            out.append('                <Uri>%s</Uri>' % escape(u))
        out.append('            </Uris>')
        out.append('        </Plugin>')
    out.append('    </Plugins>')
    out.append('</PluginVersionManifest>')
    return "\n".join(out) + "\n"


def vm_settings(source, etag_seed, plugins, status_blob_url, status_blob_type, metadata, vm, ga_families,
                required_features, hgap_version="1.0.8.159"):
    """FastTrack vmSettings JSON (protocol.md §1.14) mirroring the ExtensionsConfig content."""
    goal_states = []
    for p in plugins:
        s = p.get("settings")
        entry = {
            "name": p["name"], "version": p["version"], "location": p["location"],
            "failoverlocation": p["failover"], "additionalLocations": list(p.get("additional") or []),
            "state": p["state"], "autoUpgrade": bool(p.get("auto_upgrade")),
            "runAsStartupTask": bool(p.get("run_as_startup_task")), "isJson": True, "useExactVersion": True,
            "isMultiConfig": bool(s and "multi" in s),
        }
        if p.get("encoded_signature"):
            entry["encodedSignature"] = p["encoded_signature"]
        settings = []
        if s and "multi" in s:
            for e in s["multi"]:
                settings.append(dict(e["fasttrack"], seqNo=int(e["seq_no"]), extensionName=e["name"],
                                     extensionState=e["state"]))
            entry["dependsOn"] = [{"name": d["name"], "dependencyLevel": int(d["level"]),
                                   "dependsOnExtension": [dict(h) for h in d.get("handlers", ())]}
                                  for d in p.get("depends_on") or () if d.get("name")]
        elif s:
            entry["settingsSeqNo"] = int(s["seq_no"])
            settings.append(dict(s["fasttrack"]))
            deps = p.get("depends_on") or ()
            if deps:
                entry["dependsOn"] = [{"dependencyLevel": int(deps[0]["level"]),
                                       "dependsOnExtension": [dict(h) for h in deps[0].get("handlers", ())]}]
        entry["settings"] = settings
        goal_states.append(entry)
    doc = {
        "hostGAPluginVersion": hgap_version,
        "vmSettingsSchemaVersion": "0.0",
        "activityId": metadata["activity_id"],
        "correlationId": metadata["correlation_id"],
        "inSvdSeqNo": int(metadata["in_svd_seq_no"]),
        "extensionsLastModifiedTickCount": int(metadata["created_on_ticks"]),
        "extensionGoalStatesSource": source,
        "onHold": False,
        "statusUploadBlob": {"statusBlobType": status_blob_type, "value": status_blob_url},
        "inVMMetadata": {
            "subscriptionId": vm["subscription_id"], "resourceGroupName": vm["resource_group"],
            "vmName": vm["vm_name"], "location": vm["location"], "vmId": vm["vm_id"], "vmSize": vm["vm_size"],
            "osType": "Linux",
        },
        "requiredFeatures": [{"name": n} for n in required_features],
        "gaFamilies": [{"name": f["name"], "version": f.get("version"), "uris": list(f["uris"])}
                       for f in ga_families],
        "extensionGoalStates": goal_states,
    }
    return json.dumps(doc, indent=2, sort_keys=False)


def imds_compute(vm, hostname):
    return {
        "azEnvironment": "AzurePublicCloud",
        "location": vm["location"],
        "name": vm["vm_name"],
        "offer": "", "osType": "Linux", "placementGroupId": "", "platformFaultDomain": "0",
        "platformUpdateDomain": "0", "publisher": "", "resourceGroupName": vm["resource_group"],
        "resourceId": "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s" % (
            vm["subscription_id"], vm["resource_group"], vm["vm_name"]),
        "sku": "", "subscriptionId": vm["subscription_id"], "tags": "", "version": "", "vmId": vm["vm_id"],
        "vmScaleSetName": "", "vmSize": vm["vm_size"], "zone": "",
        "osProfile": {"adminUsername": vm["username"], "computerName": hostname,
                      "disablePasswordAuthentication": _bool(vm.get("disable_ssh_password_authentication"))},
        "storageProfile": {"imageReference": {"id": "", "offer": "", "publisher": "", "sku": "", "version": ""}},
    }


def imds_instance(vm, hostname, address):
    return {
        "compute": imds_compute(vm, hostname),
        "network": {"interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": address, "publicIpAddress": ""}],
                                            "subnet": [{"address": "10.0.0.0", "prefix": "24"}]},
                                   "ipv6": {"ipAddress": []}, "macAddress": "000D3A000001"}]},
    }
