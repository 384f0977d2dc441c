"""Extension packages (zips) built from handler folders named by a scenario."""
import io
import os
import zipfile

MAX_PACKAGE_BYTES = 64 << 20
# A fixed timestamp keeps a package's bytes (and so its hash) the same across emulator runs.
_EPOCH = (2024, 1, 1, 0, 0, 0)


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
