"""HostGAPlugin client pieces that need no server (the requests: tests/integration/platform)."""

import uuid

from workers.platform.hostplugin import correlation_id


def test_correlation_ids_are_random_version_4_uuids_written_as_uuid_writes_them():
    ids = {correlation_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        u = uuid.UUID(cid)
        assert (u.version, u.variant) == (4, uuid.RFC_4122)
        assert str(u) == cid
