"""Reading scenario and recorded files with a size cap."""


def read_capped(path, cap):
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ValueError("%s is larger than %d bytes" % (path, cap))
    return data
