"""A monitoring check as the loop (job.py) sees it: its row, what one round may use, and the
test most rows share (is there a platform to talk to?). Each row's module imports this, and
job.py imports the rows: the table depends on its rows, never the other way round."""

from typing import Callable, Dict, NamedTuple


class Check(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    name: str
    period_key: str                         # waagent.conf key: seconds between rounds
    wanted: Callable[[object], bool]        # conf -> does this configuration want it?
    run: Callable[["Context"], None]        # one round; raises on failure


class Context:
    """What a round may use: the worker (for broker calls), the configuration, and the platform
    client, made on first use (a configuration with no platform check never builds it)."""

    def __init__(self, worker, conf):
        self.worker = worker
        self.conf = conf
        self._client = None
        self.state: Dict[str, object] = {}  # per-check memory between rounds, keyed by name

    def close_connections(self) -> None:
        """After a round: the client's kept connections closed (see job.py)."""
        if self._client is not None:
            self._client.http.close()

    @property
    def client(self):
        if self._client is None:
            from workers.platform import PlatformClient
            self._client = PlatformClient.for_worker(self.worker, self.conf)
        return self._client


def on_platform(conf) -> bool:
    """Where provisioning's per-boot steps run (workers/provisioning/everyboot.py): an
    endpoint given, or an Azure VM."""
    from workers.provisioning import identity
    return bool(conf["Protocol.Endpoint"]) or identity.on_azure(conf["OS.SysRoot"])
