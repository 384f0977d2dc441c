"""Extension packages (zips) built from handler folders named by a scenario."""
import io
import os
import zipfile

MAX_PACKAGE_BYTES = 64 << 20
# A fixed timestamp keeps a package's bytes (and so its hash) the same across emulator runs.
_EPOCH = (2024, 1, 1, 0, 0, 0)


def package_bytes(source):
    """The package served for a scenario's `handler`: a folder is zipped (build_zip); a file
    ending in .zip is served byte for byte, so tests can serve hostile packages (zip-slip,
    zip bombs, symlinks) that no folder could produce."""
    if os.path.isfile(source) and source.endswith(".zip"):
        with open(source, "rb") as f:
            data = f.read(MAX_PACKAGE_BYTES + 1)
        if len(data) > MAX_PACKAGE_BYTES:
            raise ValueError("package %s is larger than %d bytes" % (source, MAX_PACKAGE_BYTES))
        return data
    return build_zip(source)


def build_zip(folder):
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                arc = os.path.relpath(path, folder)
                with open(path, "rb") as f:
                    data = f.read(MAX_PACKAGE_BYTES + 1)
                total += len(data)
                if total > MAX_PACKAGE_BYTES:
                    raise ValueError("handler folder %s is larger than %d bytes" % (folder, MAX_PACKAGE_BYTES))
                info = zipfile.ZipInfo(arc, _EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                mode = os.stat(path).st_mode & 0o777
                info.external_attr = (0o100000 | mode) << 16
                zf.writestr(info, data)
    return buf.getvalue()
