"""The provisioning DVD: ovf-env.xml (protocol.md §3.2, laid out as the recorded ovf-env files are)
in a folder and in an ISO 9660 + UDF image made with genisoimage."""
import base64
import os
import shutil
import subprocess
import tempfile
from xml.sax.saxutils import escape

from emulator import platform

VOLUME_ID = "rd_rdfe_stable"


def _bool(v):
    return "true" if v else "false"


def ovf_env(vm, certs):
    """vm: the scenario's vm section with defaults; certs: name -> TenantCert."""
    def thumb(spec):
        if spec.get("fingerprint"):
            return spec["fingerprint"]
        if spec.get("certificate"):
            return certs[spec["certificate"]].thumbprint
        raise platform.ScenarioError("an SSH key needs a certificate or a fingerprint")

    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" '
        'xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" xmlns:wa="http://schemas.microsoft.com/windowsazure" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">',
        '    <wa:ProvisioningSection>',
        '      <wa:Version>1.0</wa:Version>',
        '      <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">',
        '        <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>',
        '        <HostName>%s</HostName>' % escape(vm["hostname"]),
        '        <UserName>%s</UserName>' % escape(vm["username"]),
    ]
    if vm.get("password") is not None:
        lines.append('        <UserPassword>%s</UserPassword>' % escape(vm["password"]))
    lines.append('        <DisableSshPasswordAuthentication>%s</DisableSshPasswordAuthentication>'
                 % _bool(vm.get("disable_ssh_password_authentication")))
    pub, pairs = vm.get("ssh_public_keys") or [], vm.get("ssh_key_pairs") or []
    if pub or pairs:
        lines.append('        <SSH>')
        lines.append('          <PublicKeys>')
        for k in pub:
            value = k.get("value")
            if value is None and k.get("certificate"):
                value = certs[k["certificate"]].ssh_public_key("%s@%s" % (vm["username"], vm["hostname"]))
            lines += ['            <PublicKey>',
                      '              <Fingerprint>%s</Fingerprint>' % escape(thumb(k)),
                      '              <Path>%s</Path>' % escape(k["path"]),
                      '              <Value>%s</Value>' % escape(value or ""),
                      '            </PublicKey>']
        lines.append('          </PublicKeys>')
        lines.append('          <KeyPairs>')
        for k in pairs:
            lines += ['            <KeyPair>',
                      '              <Fingerprint>%s</Fingerprint>' % escape(thumb(k)),
                      '              <Path>%s</Path>' % escape(k["path"]),
                      '            </KeyPair>']
        lines.append('          </KeyPairs>')
        lines.append('        </SSH>')
    if vm.get("custom_data") is not None:
        lines.append('        <CustomData>%s</CustomData>'
                     % base64.b64encode(vm["custom_data"].encode("utf-8")).decode())
    lines += [
        '      </LinuxProvisioningConfigurationSet>',
        '    </wa:ProvisioningSection>',
        '    <wa:PlatformSettingsSection>',
        '\t\t<wa:Version>1.0</wa:Version>',
        '\t\t<wa:PlatformSettings>',
        '\t\t\t<wa:KmsServerHostname>kms.core.windows.net</wa:KmsServerHostname>',
        '\t\t\t<wa:ProvisionGuestAgent>%s</wa:ProvisionGuestAgent>' % _bool(vm.get("provision_guest_agent", True)),
        '\t\t\t<wa:GuestAgentPackageName xsi:nil="true"/>',
        '\t\t\t<wa:RetainWindowsPEPassInUnattend>true</wa:RetainWindowsPEPassInUnattend>',
        '\t\t\t<wa:RetainOfflineServicingPassInUnattend>true</wa:RetainOfflineServicingPassInUnattend>',
        '\t\t\t<wa:PreprovisionedVm>false</wa:PreprovisionedVm>',
        '\t\t</wa:PlatformSettings>',
        '\t</wa:PlatformSettingsSection>',
        ' </Environment>',
    ]
    return "\n".join(lines) + "\n"


def _write_private(path, data):
    # ovf-env.xml holds the admin password
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_iso(source_file, iso_path):
    tool = shutil.which("genisoimage") or shutil.which("mkisofs")
    if not tool:
        raise RuntimeError("genisoimage is not installed (Debian package genisoimage)")
    with tempfile.TemporaryDirectory() as stage:
        shutil.copyfile(source_file, os.path.join(stage, "ovf-env.xml"))
        subprocess.run([tool, "-quiet", "-o", iso_path, "-V", VOLUME_ID, "-J", "-r", "-udf",
                        "-input-charset", "utf-8", stage], check=True, capture_output=True, timeout=120)
    os.chmod(iso_path, 0o600)


def write(scenario, base_dir, out_dir, iso=True):
    plat = platform.Platform(scenario, base_dir)
    vm = dict(plat.vm)
    if any(not s.get("cert") for s in scenario.get("certificates") or []):
        # a generated certificate gets a new thumbprint in every process: the DVD would not match the server
        raise platform.ScenarioError("media needs certificates from files (cert/key), not generated ones")
    text = ovf_env(vm, plat.certs).encode("utf-8")
    os.makedirs(out_dir, exist_ok=True)
    xml_path = os.path.join(out_dir, "ovf-env.xml")
    _write_private(xml_path, text)
    result = {"ovf_env": xml_path, "bytes": len(text)}
    if iso:
        iso_path = os.path.join(out_dir, "ovf-env.iso")
        make_iso(xml_path, iso_path)
        result["iso"] = iso_path
    return result
