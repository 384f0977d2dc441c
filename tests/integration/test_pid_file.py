"""`Pid.File` (issue 16): the real supervisor writes its own pid there once it holds the control
socket, as root with mode 0644, replaces (never follows) whatever is at the path, and removes
the file when it stops; a second supervisor that cannot start leaves the file alone."""

import os
import stat
import subprocess

from tests.integration.supervisor_harness import GUESTAGENTD, wait_for


def _pid_file(agent):
    return os.path.join(agent.dir, "waagent.pid")


def test_the_supervisor_writes_its_pid_and_removes_it_at_stop(make_agent):
    agent = make_agent().start()
    path = _pid_file(agent)
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    with open(path) as f:
        assert f.read() == "%d\n" % agent.proc.pid
    assert "event=pid_file path=%s pid=%d" % (path, agent.proc.pid) in agent.log()
    assert agent.stop() == 0
    assert not os.path.lexists(path)
    assert [n for n in os.listdir(agent.dir) if n.startswith("waagent.pid")] == []


def test_a_symlink_at_the_path_is_replaced_not_followed(make_agent, tmp_path):
    agent = make_agent()
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.symlink(str(victim), _pid_file(agent))
    agent.start()
    st = os.lstat(_pid_file(agent))
    assert stat.S_ISREG(st.st_mode)
    assert victim.read_text() == "keep\n"
    with open(_pid_file(agent)) as f:
        assert int(f.read()) == agent.proc.pid


def test_a_stale_or_foreign_pid_is_replaced_and_a_live_one_logged(make_agent):
    # A pid left by a killed supervisor (dead) is replaced quietly; a live process that is not
    # this agent (here: the test itself, as a former waagent daemon would be) is named in the log.
    agent = make_agent()
    with open(_pid_file(agent), "w") as f:
        f.write("%d\n" % os.getpid())
    agent.start()
    with open(_pid_file(agent)) as f:
        assert int(f.read()) == agent.proc.pid
    assert "event=pid_file path=%s former_pid=%d alive: not this agent's; replaced" \
        % (_pid_file(agent), os.getpid()) in agent.log()


def test_a_second_supervisor_that_cannot_start_leaves_the_file_alone(make_agent):
    agent = make_agent().start()
    second = subprocess.run([GUESTAGENTD, "--config", agent.conf], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert second.returncode == 3, second
    with open(_pid_file(agent)) as f:
        assert int(f.read()) == agent.proc.pid
    # The running one still removes it at its stop.
    assert agent.stop() == 0
    wait_for(lambda: not os.path.lexists(_pid_file(agent)), what="pid file removed")
