"""Extension manifests and packages (protocol.md §1.8, §4.3): version selection, download
(direct, then the HostGAPlugin's /extensionArtifact: PlatformClient.download), verification,
and the descriptor handed to the broker, which extracts the package itself.

The worker never writes where root executes: the package is written to an unlinked file in
the worker's own folder and only its descriptor leaves the process.
"""

import io
import json
import os
from typing import NamedTuple, Optional, Tuple

from statefiles import unlinked_file
from workers.platform.errors import DocumentError, PlatformError
from workers.platform.extensionsconfig import ManifestPackage, parse_manifest

MANIFEST = "HandlerManifest.json"
MAX_MANIFEST_BYTES = 1024 * 1024


class PackageError(Exception):
    """A package or manifest that cannot be used; `code` is the status blob's error code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def version_key(version: str) -> Tuple:
    """FlexibleVersion ordering: numeric parts compared as numbers."""
    parts = []
    for p in str(version).split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    while parts and parts[-1] == (0, 0, ""):
        parts.pop()
    return tuple(parts)


def same_version(a: str, b: str) -> bool:
    return version_key(a) == version_key(b)


def select(packages: Tuple[ManifestPackage, ...], version: str) -> ManifestPackage:
    """The manifest's package of exactly the requested version (§4.3: no auto-upgrade)."""
    for pkg in sorted(packages, key=lambda p: version_key(p.version)):
        if same_version(pkg.version, version) and not pkg.internal:
            return pkg
    for pkg in packages:
        if same_version(pkg.version, version):
            return pkg
    raise PackageError(1001, "Unable to find version %s in manifest" % version)


class HandlerManifest(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """HandlerManifest.json (§4.4) as the worker reads it to decide (the broker reads its own
    copy for the commands)."""
    install: Optional[str]
    uninstall: Optional[str]
    update: Optional[str]
    enable: Optional[str]
    disable: Optional[str]
    report_heartbeat: bool = False
    continue_on_update_failure: bool = False
    supports_multiple_extensions: bool = False
    update_with_install: bool = True


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


def parse_handler_manifest(data: bytes) -> HandlerManifest:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
        if isinstance(doc, list):
            doc = doc[0]
        m = doc["handlerManifest"]
        if not isinstance(m, dict):
            raise TypeError
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as e:
        raise PackageError(1003, "HandlerManifest.json is malformed: %s" % str(e)[:200]) from None

    def cmd(key):
        v = m.get(key)
        return v if isinstance(v, str) and v.strip() else None
    return HandlerManifest(
        cmd("installCommand"), cmd("uninstallCommand"), cmd("updateCommand"),
        cmd("enableCommand"), cmd("disableCommand"),
        _bool(m.get("reportHeartbeat", False)), _bool(m.get("continueOnUpdateFailure", False)),
        _bool(m.get("supportsMultipleExtensions", False)),
        str(m.get("updateMode", "UpdateWithInstall")).lower() != "updatewithoutinstall")


def manifest_json(m: HandlerManifest) -> bytes:
    """The fields the worker decides on, as a HandlerManifest.json it parses back."""
    return json.dumps([{"handlerManifest": {
        "installCommand": m.install, "uninstallCommand": m.uninstall,
        "updateCommand": m.update, "enableCommand": m.enable, "disableCommand": m.disable,
        "reportHeartbeat": m.report_heartbeat,
        "continueOnUpdateFailure": m.continue_on_update_failure,
        "supportsMultipleExtensions": m.supports_multiple_extensions,
        "updateMode": "UpdateWithInstall" if m.update_with_install
        else "UpdateWithoutInstall"}}]).encode()


def manifest_of_package(data: bytes) -> HandlerManifest:
    """The HandlerManifest.json of a zip (at its root, or the shallowest one)."""
    # Imported here: this runs in the download's fork (job.py), so zipfile (and pathlib with
    # it, ~0.7 MiB) is never resident in the extensions worker (issue 17).
    import zipfile
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if n.rstrip("/").split("/")[-1] == MANIFEST]
            if not names:
                raise PackageError(1002, "the package has no HandlerManifest.json")
            name = min(names, key=lambda n: n.count("/"))
            info = zf.getinfo(name)
            if info.file_size > MAX_MANIFEST_BYTES:
                raise PackageError(1003, "HandlerManifest.json is too large")
            return parse_handler_manifest(zf.read(name))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, RuntimeError) as e:
        raise PackageError(1004, "the package is not a valid zip: %s" % str(e)[:200]) from None


def fetch(client, handler, max_bytes: int) -> Tuple[bytes, HandlerManifest]:
    """Download the handler's manifest, select its version and download the package."""
    try:
        manifest = client.download(handler.manifest_uris, is_manifest=True)
    except PlatformError as e:
        raise PackageError(1001, "manifest download failed: %s" % str(e)[:400]) from None
    try:
        packages = parse_manifest(manifest)
    except DocumentError as e:
        raise PackageError(1001, "manifest is malformed: %s" % str(e)[:300]) from None
    pkg = select(packages, handler.version)
    try:
        data = client.download(pkg.uris, manifest_url=(handler.manifest_uris or (None,))[0],
                               max_bytes=max_bytes)
    except PlatformError as e:
        raise PackageError(1004, "package download failed: %s" % str(e)[:400]) from None
    return data, manifest_of_package(data)


def package_file(folder: str) -> int:
    """A descriptor of an empty, unlinked file in the worker's folder, for the package: the
    fork that downloads it writes it there (write_package), the broker gets the descriptor."""
    return unlinked_file(folder)


def write_package(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
