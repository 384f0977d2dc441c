"""The spawner's verbs (ipc/verbs/spawner.py): strict, and never granted to a worker."""

import pytest

from ipc import envelope
from ipc.errors import DENIED, IpcError
from ipc.verbs import check_args, lookup
from supervisor.policy import Policy
from supervisor.table import NAMES

GOOD = {"worker": "monitoring", "module": "workers.monitoring", "uid": 998, "gid": 997,
        "env": {"PATH": "/usr/bin", "GUESTAGENT_CHANNEL_FD": "3"}}


def test_spawn_order_schema_is_strict():
    verb = lookup("spawner.spawn")
    assert verb.max_fds == 2
    check_args(verb, GOOD)
    check_args(verb, dict(GOOD, uid=None, gid=None))
    check_args(verb, dict(GOOD, cgroup="/sys/fs/cgroup/system.slice/guestagent.service/"
                                       "guestagent.42/monitoring"))
    check_args(verb, dict(GOOD, cgroup=None))
    for bad in (dict(GOOD, module="os"), dict(GOOD, module="workers.x; import os"),
                dict(GOOD, module="supervisor.loop"), dict(GOOD, uid=-1),
                dict(GOOD, uid=2 ** 32 - 1), dict(GOOD, env={"lower": "x"}),
                dict(GOOD, env={"A%d" % i: "x" for i in range(17)}),
                dict(GOOD, env={"PATH": "x" * 4097}), dict(GOOD, argv=["sh"]),
                dict(GOOD, cgroup="/etc"), dict(GOOD, cgroup="/sys/fs/cgroup/../../etc"),
                dict(GOOD, cgroup="/sys/fs/cgroup/a/.."), dict(GOOD, cgroup="/sys/fs/cgroup"),
                {k: v for k, v in GOOD.items() if k != "env"}):
        with pytest.raises(IpcError):
            check_args(verb, bad)
    ready = lookup("spawner.ready")
    assert ready.notice
    check_args(ready, {"pid": 42})
    with pytest.raises(IpcError):
        check_args(ready, {"pid": 0})


@pytest.mark.parametrize("test_hooks", [False, True])
def test_no_worker_may_call_a_spawner_verb(test_hooks):
    policy = Policy(test_hooks=test_hooks)
    assert not [v for v in policy.permits if v.startswith("spawner.")]
    for name in NAMES:
        session = policy.session(name)
        for msg in (envelope.request(1, "spawner.spawn", GOOD),
                    envelope.notice("spawner.ready", {"pid": 42})):
            with pytest.raises(IpcError) as e:
                session.check(envelope.parse(msg))
            assert e.value.code == DENIED
