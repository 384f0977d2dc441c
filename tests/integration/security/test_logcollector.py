"""Attacks on the log collector's verbs (ipc/verbs/logs.py, supervisor/privileged/logs.py): a
real process under guestagent-logs, on its own channel, asks for the worst it can — symlinks
to root's secrets planted as a file and as a folder, a folder or file swapped for a symlink, a
FIFO or a hard link after the broker listed it, indexes it was never given, paths of its own —
and gets nothing but the manifest's regular files. Other workers may not call the verbs.
"""

import json
import os
import time

EXT = "Contoso.Demo.HelloWorld"
SECRET = "ROOT-SECRET-not-for-the-collector"

READ_ALL = """
import time
result, _ = worker.call("logs.manifest", {})
report("names", [f["name"] for f in result["files"]])
report("skipped", result["skipped"])
got = {}
for index, item in enumerate(result["files"]):
    worker.tick()
    try:
        opened, fds = worker.call("logs.open", {"index": index})
    except Exception as e:
        got[item["name"]] = "refused: %s" % e
        continue
    data = b""
    for fd in fds:
        data += os.read(fd, 1 << 20)
        os.close(fd)
    got[item["name"]] = data.decode("utf-8", "replace")
report("got", got)
"""

# Lists, says so, waits for the test to swap things under the broker's feet, then opens.
AFTER_SWAP = """
import time
worker.ready()   # `agentctl start` returns once RUNNING: the test goes on while we wait
result, _ = worker.call("logs.manifest", {})
names = [f["name"] for f in result["files"]]
report("names", names)
flag = os.path.join(os.path.dirname(os.environ["GUESTAGENT_TEST_DIR"] + "/"), "results", "swapped")
deadline = time.monotonic() + 30
while not os.path.exists(flag) and time.monotonic() < deadline:
    worker.tick()
    time.sleep(0.05)
outcome = {}
for wanted in WANTED:
    index = names.index(wanted)
    started = time.monotonic()
    try:
        opened, fds = worker.call("logs.open", {"index": index})
        data = b"".join(os.read(fd, 1 << 20) for fd in fds)
        for fd in fds:
            os.close(fd)
        outcome[wanted] = ["opened", data.decode("utf-8", "replace")]
    except Exception as e:
        outcome[wanted] = ["refused", str(e), round(time.monotonic() - started, 3)]
report("outcome", outcome)
"""


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def setup_tree(agent):
    azure = os.path.join(agent.dir, "sysroot", "var", "log", "azure")
    secret = os.path.join(agent.dir, "rootonly")
    write(os.path.join(secret, "ssh", "authorized_keys"), SECRET + "\n", 0o600)
    write(os.path.join(secret, "ssh", "handler.log"), SECRET + "\n", 0o600)
    write(os.path.join(secret, "shadow"), SECRET + "\n", 0o600)
    os.chmod(secret, 0o700)
    for name in ("handler.log", "second.log", "third.log", "fourth.log"):
        write(os.path.join(azure, EXT, name), "an ordinary line of %s\n" % name)
    return azure, secret


def by_key(records):
    return {r["key"]: r["value"] for r in records}


def test_planted_symlinks_file_and_folder_are_never_followed(agent):
    azure, secret = setup_tree(agent)
    os.symlink(os.path.join(secret, "shadow"), os.path.join(azure, EXT, "linked.log"))
    os.symlink(os.path.join(secret, "ssh"), os.path.join(azure, "Evil"))
    # A symlink one level up too: the folder of an extension's sub-folder.
    os.makedirs(os.path.join(azure, "Other", "real"))
    os.symlink(os.path.join(secret, "ssh"), os.path.join(azure, "Other", "sub"))
    write(os.path.join(azure, EXT, "transport.prv"), "-----BEGIN PRIVATE KEY-----\nx\n")
    os.mkfifo(os.path.join(azure, EXT, "pipe.log"))
    records = agent.attack("logcollector", READ_ALL, timeout=60)
    assert records[-1]["key"] == "done", records
    got = by_key(records)
    names = got["names"]
    assert "var/log/azure/%s/handler.log" % EXT in names
    assert not any("Evil" in n or "linked" in n or "/sub/" in n or n.endswith(".prv")
                   or "pipe" in n for n in names), names
    skipped = {s["name"]: s["why"] for s in got["skipped"]}
    assert skipped["var/log/azure/Evil"] == "a symlink (never followed)"
    assert skipped["var/log/azure/%s/linked.log" % EXT] == "a symlink (never followed)"
    assert skipped["var/log/azure/Other/sub"] == "a symlink (never followed)"
    assert skipped["var/log/azure/%s/transport.prv" % EXT] == "a private key"
    assert skipped["var/log/azure/%s/pipe.log" % EXT] == "not a regular file"
    assert got["got"]["var/log/azure/%s/handler.log" % EXT] == "an ordinary line of handler.log\n"
    assert SECRET not in json.dumps(got)


def test_swapped_after_listing_a_symlink_fifo_or_hard_link_is_refused(agent):
    azure, secret = setup_tree(agent)
    wanted = ["var/log/azure/%s/%s" % (EXT, n) for n in
              ("handler.log", "second.log", "third.log", "fourth.log")]
    agent.start_attack("logcollector", "WANTED = %r\n" % wanted + AFTER_SWAP)
    flag = os.path.join(agent.test_dir, "results", "swapped")

    def listed():
        return any(r["key"] == "names" for r in agent.attack_records("logcollector"))
    deadline = time.monotonic() + 30
    while not listed():
        assert time.monotonic() < deadline, agent.attack_records("logcollector")
        time.sleep(0.05)
    ext = os.path.join(azure, EXT)
    # The folder stays (the other three entries), its files swapped: a symlink to root's
    # file, a FIFO (an open that would block forever without O_NONBLOCK), a hard link.
    os.unlink(os.path.join(ext, "second.log"))
    os.symlink(os.path.join(secret, "shadow"), os.path.join(ext, "second.log"))
    os.unlink(os.path.join(ext, "third.log"))
    os.mkfifo(os.path.join(ext, "third.log"))
    os.unlink(os.path.join(ext, "fourth.log"))
    os.link(os.path.join(secret, "shadow"), os.path.join(ext, "fourth.log"))
    # And for handler.log, the whole folder: a symlink to root's ~/.ssh (it has a handler.log).
    os.rename(ext, ext + ".moved")
    os.symlink(os.path.join(secret, "ssh"), ext)
    with open(flag, "w") as f:
        f.write("1")

    def done():
        records = agent.attack_records("logcollector")
        return records if records and records[-1]["key"] in ("done", "crashed") else None
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, agent.attack_records("logcollector")
        time.sleep(0.1)
    agent.calm("logcollector")
    outcome = by_key(done())["outcome"]
    for name in wanted:
        assert outcome[name][0] == "refused", (name, outcome[name])
    assert "a symlink or not a folder (never followed)" in outcome[wanted[0]][1]
    # The symlinked file: the folder is a symlink now too, so the walk ends there first.
    assert all("never followed" in outcome[n][1] for n in wanted[:2])
    assert SECRET not in json.dumps(outcome)
    assert all(o[2] < 5 for o in outcome.values()), outcome   # the FIFO did not block


def test_a_hard_link_or_fifo_in_place_of_a_listed_file_is_refused(agent):
    azure, secret = setup_tree(agent)
    wanted = ["var/log/azure/%s/%s" % (EXT, n) for n in ("second.log", "third.log")]
    agent.start_attack("logcollector", "WANTED = %r\n" % wanted + AFTER_SWAP)
    deadline = time.monotonic() + 30
    while not any(r["key"] == "names" for r in agent.attack_records("logcollector")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ext = os.path.join(azure, EXT)
    os.unlink(os.path.join(ext, "second.log"))
    os.link(os.path.join(secret, "shadow"), os.path.join(ext, "second.log"))
    os.unlink(os.path.join(ext, "third.log"))
    os.mkfifo(os.path.join(ext, "third.log"))
    with open(os.path.join(agent.test_dir, "results", "swapped"), "w") as f:
        f.write("1")
    deadline = time.monotonic() + 60
    while True:
        records = agent.attack_records("logcollector")
        if records and records[-1]["key"] in ("done", "crashed"):
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.1)
    agent.calm("logcollector")
    outcome = by_key(records)["outcome"]
    assert outcome[wanted[0]][0] == "refused" and "more than one link" in outcome[wanted[0]][1]
    assert outcome[wanted[1]][0] == "refused" and "not a regular file" in outcome[wanted[1]][1]
    assert outcome[wanted[1]][2] < 5


def test_an_index_it_was_not_given_is_an_answer_a_path_is_a_violation(agent):
    setup_tree(agent)
    records = agent.attack("logcollector", """
report("before", attempt("logs.open", {"index": 1999}))
worker.call("logs.manifest", {})
report("beyond", attempt("logs.open", {"index": 1999}))
attempt("logs.open", {"index": 0, "path": "/root/.ssh/authorized_keys"})
report("after", "still here")
""")
    got = by_key(records)
    assert got["before"][0] == "error" and got["before"][1] == "FAILED"
    assert "no entry 1999" in got["before"][2]
    assert got["beyond"][0] == "error" and "no entry 1999" in got["beyond"][2]
    # An argument the schema does not know: the worker is ended (a violation).
    assert "after" not in got and records[-1]["key"] == "killed", records
    assert "event=security" in agent.stderr() + agent.log("supervisor")


def test_the_collector_cannot_ask_for_the_full_manifest_itself(agent):
    # -full reads system configuration (sshd_config, fstab...): only root asks for it, with
    # `agentctl collect-logs --full`; the broker keeps that request, the worker has no say.
    setup_tree(agent)
    records = agent.attack("logcollector", """
report("uid", os.getuid())
attempt("logs.manifest", {"full": True})
report("after", "still here")
""")
    assert records[-1]["key"] == "killed" and "after" not in by_key(records), records
    assert "event=security" in agent.stderr() + agent.log("supervisor")


def test_other_workers_may_not_call_the_log_verbs(agent):
    for verb, args in (("logs.manifest", {}), ("logs.open", {"index": 0}),
                       ("logs.journal", {})):
        records = agent.attack("monitoring", """
report("uid", os.getuid())
attempt(%r, %r)
report("after", 1)
""" % (verb, args))
        assert records[-1]["key"] == "killed", (verb, records)
        assert "after" not in by_key(records)


def test_the_journal_descriptor_is_read_only(agent):
    records = agent.attack("logcollector", """
try:
    result, fds = worker.call("logs.journal", {})
except Exception as e:
    report("journal", "failed: %s" % e)
else:
    report("journal", result)
    st = os.fstat(fds[0])
    report("file", [st.st_nlink, st.st_uid, oct(st.st_mode & 0o777)])
    try:
        os.write(fds[0], b"forged")
        report("write", "written")
    except OSError as e:
        report("write", e.strerror)
""", timeout=160)
    got = by_key(records)
    if isinstance(got["journal"], str):
        assert "journalctl" in got["journal"]   # no journalctl on this host: a clear answer
    else:
        assert got["write"] == "Bad file descriptor", got
        # Nameless from the start (statefiles.unlinked_file), root's and 0600: nothing in
        # the broker's folder for the worker (or anyone) to open by name.
        assert got["file"] == [0, 0, "0o600"], got
        assert [n for n in os.listdir(os.path.join(agent.state_dir, "broker"))
                if n.startswith(".")] == []   # a temp_file fallback would be ".tmp.*"
