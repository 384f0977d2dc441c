"""The provisioning DVD: ovf-env.xml in the fixtures' layout, and an ISO 9660 + UDF image whose
ovf-env.xml reads back byte for byte (read in user space: this kernel mounts neither filesystem)."""
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.contract.emulator_harness import DEFAULT_SCENARIO, FIXTURES, REPO

SECTOR = 2048


def iso9660_root_files(image):
    """{name: bytes} of the root directory, from the primary volume descriptor (ECMA-119 8.4)."""
    with open(image, "rb") as f:
        data = f.read()
    pvd = data[16 * SECTOR:17 * SECTOR]
    assert pvd[0] == 1 and pvd[1:6] == b"CD001"
    root = pvd[156:156 + 34]
    extent, size = struct.unpack_from("<I", root, 2)[0], struct.unpack_from("<I", root, 10)[0]
    files, pos, end = {}, extent * SECTOR, extent * SECTOR + size
    while pos < end:
        length = data[pos]
        if length == 0:  # records do not cross sectors: skip to the next one
            pos = (pos // SECTOR + 1) * SECTOR
            continue
        rec = data[pos:pos + length]
        f_extent, f_size, flags, name_len = (struct.unpack_from("<I", rec, 2)[0], struct.unpack_from("<I", rec, 10)[0],
                                             rec[25], rec[32])
        name = rec[33:33 + name_len]
        if not flags & 2:
            files[name.decode("ascii")] = data[f_extent * SECTOR:f_extent * SECTOR + f_size]
        pos += length
    return files


def volume_descriptors(image):
    with open(image, "rb") as f:
        f.seek(16 * SECTOR)
        area = f.read(32 * SECTOR)
    return {area[i + 1:i + 6] for i in range(0, len(area), SECTOR)}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    out = tmp_path_factory.mktemp("dvd")
    r = subprocess.run([sys.executable, "-m", "emulator", "media", "--scenario", DEFAULT_SCENARIO, "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def elements(path):
    """Element order with namespaces: what 'as the fixtures have them' means."""
    return [el.tag for el in ET.parse(path).getroot().iter()]


def test_ovf_env_matches_the_fixture_layout(media):
    ours = ET.parse(media["ovf_env"]).getroot()
    fixture = os.path.join(FIXTURES, "ovf-env.xml")
    assert elements(media["ovf_env"]) == elements(fixture)
    with open(media["ovf_env"], "rb") as f:
        head = f.read(400)
    with open(fixture, "rb") as f:
        assert head.split(b">")[1] == f.read(400).split(b">")[1]  # the Environment start tag, namespaces and all
    ns = {"wa": "http://schemas.microsoft.com/windowsazure", "oe": "http://schemas.dmtf.org/ovf/environment/1"}
    cs = ours.find("wa:ProvisioningSection/wa:LinuxProvisioningConfigurationSet", ns)
    assert cs.find("wa:HostName", ns).text == "guestagent-demo"
    assert cs.find("wa:UserName", ns).text == "azureuser"
    assert cs.find("wa:UserPassword", ns).text
    assert base64.b64decode(cs.find("wa:CustomData", ns).text).startswith(b"#!/bin/sh")
    fp = cs.find("wa:SSH/wa:KeyPairs/wa:KeyPair/wa:Fingerprint", ns).text
    assert len(fp) == 40 and fp == cs.find("wa:SSH/wa:PublicKeys/wa:PublicKey/wa:Fingerprint", ns).text
    assert cs.find("wa:SSH/wa:PublicKeys/wa:PublicKey/wa:Value", ns).text.startswith("ssh-rsa ")
    assert ours.find("wa:PlatformSettingsSection/wa:PlatformSettings/wa:ProvisionGuestAgent", ns).text == "true"
    assert os.stat(media["ovf_env"]).st_mode & 0o077 == 0  # it holds the password


def test_dvd_image_reads_back_byte_for_byte(media):
    with open(media["ovf_env"], "rb") as f:
        want = f.read()
    files = iso9660_root_files(media["iso"])
    assert files["OVF_ENV.XML;1"] == want
    # UDF volume recognition sequence alongside ISO 9660
    vds = volume_descriptors(media["iso"])
    assert b"CD001" in vds and b"BEA01" in vds and (b"NSR02" in vds or b"NSR03" in vds)
    if shutil.which("isoinfo"):
        got = subprocess.run(["isoinfo", "-i", media["iso"], "-J", "-x", "/ovf-env.xml"], capture_output=True,
                             timeout=60, check=True).stdout
        assert got == want
