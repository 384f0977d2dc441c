"""The root supervisor of guestagent (guestagentd): spawns and supervises the workers,
brokers their privileged verbs, captures their logs and serves the control socket.

Modules, named for what they hold:
- daemon.py     `guestagentd` entry point: options, --check-config, --daemonize, start_detached
- loop.py       the single-threaded event loop (selectors): the OS side of supervision (spawn,
                kill, reap), worker channels (read, check, run, reply), the control verbs
- process.py    one worker's state machine, the only place a state changes, behind a seam
- flood.py      how many messages a worker may send (a flood is a violation)
- table.py      the worker table: one frozen record per worker
- states.py     supervision states and their allowed transitions
- backoff.py    restart delay and flapping window (pure)
- spawn.py      fork+exec of a worker into a clean, unprivileged image
- spawner.py    the handle on the preloaded spawner (zygote; the process itself: spawner/)
- trees.py      each worker's whole process tree: cgroup, process group, subreaper, reaper
- policy.py     which worker may call which verb (ONCE and phase gates)
- broker.py     the vocabulary of a privileged verb's row (Privileged, Context, permits);
                the rows and handlers are in privileged/, their table in privileged/verbs.py
- control.py    the control socket (SO_PEERCRED: root all verbs, guestagent-admin read-only)
                and its limits (connections per uid, root's own, bounded reply queues)
- logcapture.py each worker's stdout/stderr to its own rotated file and to the journal (the
                one filter, redaction/, on every line), and security.log
- notify.py     sd_notify without libsystemd

Keep this file free of heavy imports: workers and agentctl import small pieces of this package.
"""

# One source for both versions (config/version.py), re-exported for the supervisor's modules.
from config.version import GUESTAGENT_VERSION as VERSION, WAAGENT_VERSION  # noqa: E402,F401
