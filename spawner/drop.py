"""`python -I -m spawner.drop UID GID SUPERVISOR_PID -- PROGRAM ARGS...`: become UID:GID the
way every worker does, then exec PROGRAM with the worker's clean environment.

What `systemd-run --scope` runs for a worker that lives in a slice of its own (the log
collector; supervisor/slices.py): systemd-run's own `--uid` would skip setgroups and keep
root's supplementary groups, so the scope's command is this, as root, and the drop is the
supervisor's own code (launch/ drop_privileges: bounding and ambient sets
emptied, setgroups([]), setresgid, setresuid, PDEATHSIG re-armed after the uid change with a
check that the supervisor still lives, NO_NEW_PRIVS, signals reset, umask 077, cwd /).
systemd-run --scope execs in place, so our parent is still the supervisor.
"""

import os
import sys

from ipc import handshake

# The worker environment (launch/ worker_env): nothing else passes.
KEPT = ("PATH", "LANG", "HOME", handshake.ENV_CHANNEL_FD, handshake.ENV_WORKER,
        handshake.ENV_CONFIG, handshake.ENV_LOG_LEVEL, handshake.ENV_TEST_DIR)


def main(argv) -> int:
    import launch as spawn   # the supervisor's own privilege drop (launch/)
    try:
        uid, gid, supervisor_pid = int(argv[0]), int(argv[1]), int(argv[2])
        if argv[3] != "--" or len(argv) < 5 or uid == 0 or gid == 0:
            raise ValueError
    except (IndexError, ValueError):
        sys.stderr.write("usage: spawner.drop UID GID SUPERVISOR_PID -- PROGRAM ARGS (not root)\n")
        return spawn.SPAWN_FAILED
    program = argv[4:]
    env = {k: v for k, v in os.environ.items() if k in KEPT}
    try:
        spawn.drop_privileges(spawn.Identity(uid, gid), supervisor_pid)
        os.execve(program[0], program, env)
    except BaseException as e:  # noqa: B902 - anything: report and leave, never run as root
        os.write(2, ("spawner.drop: %s\n" % e).encode())
    return spawn.SPAWN_FAILED


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))
