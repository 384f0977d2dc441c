"""The VM id (SMBIOS byte swap), the marker comparison and cloud-init detection."""

import os

from workers.provisioning import identity

SMBIOS = "4C4C4544-0050-4810-8051-B2C04F4D3132"
VMID = "44454c4c-5000-1048-8051-b2c04f4d3132"


def test_vm_id_swaps_the_first_three_groups():
    assert identity.vm_id(SMBIOS) == VMID
    assert identity.vm_id(SMBIOS.lower() + "\n") == VMID
    assert identity.swap_guid(identity.swap_guid(SMBIOS)) == SMBIOS


def test_vm_id_of_nothing():
    assert identity.vm_id(None) is None
    assert identity.vm_id("not-a-guid") is None


def test_marker_matches_either_form_ignoring_case():
    assert identity.marker_matches(VMID, VMID)
    assert identity.marker_matches(VMID.upper() + "\n", VMID)
    assert identity.marker_matches(SMBIOS, VMID)          # written unswapped by an old agent
    assert not identity.marker_matches("", VMID)          # empty legacy marker
    assert not identity.marker_matches(VMID, None)
    assert not identity.marker_matches("11111111-2222-3333-4444-555555555555", VMID)


def _enable(root, where="etc/systemd/system/cloud-init.target.wants"):
    d = root / where
    d.mkdir(parents=True)
    os.symlink("/lib/systemd/system/cloud-init-local.service", d / identity.UNIT)


def test_cloud_init_absent(tmp_path):
    assert not identity.cloud_init_enabled(str(tmp_path), str(tmp_path))


def test_cloud_init_enabled(tmp_path):
    _enable(tmp_path)
    assert identity.cloud_init_enabled(str(tmp_path), str(tmp_path))


def test_cloud_init_disabled_by_file_or_cmdline(tmp_path):
    _enable(tmp_path)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cmdline").write_text("ro quiet cloud-init=disabled\n")
    assert not identity.cloud_init_enabled(str(tmp_path), str(tmp_path))
    (tmp_path / "proc" / "cmdline").write_text("ro quiet\n")
    (tmp_path / "etc" / "cloud").mkdir(parents=True)
    (tmp_path / "etc" / "cloud" / "cloud-init.disabled").write_text("")
    assert not identity.cloud_init_enabled(str(tmp_path), str(tmp_path))
