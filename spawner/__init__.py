"""The preloaded spawner (a zygote): workers forked from one clean, preloaded image.

Its own package, run as `python -I -m spawner`: a root process that imports the workers'
code (`workers/`), which the supervisor never imports. The supervisor's handle on it (start,
orders, fallback, retirement) is supervisor/spawner.py; what both sides and the workers agree on
(channel fd, environment names, titles, protocol version) is ipc/handshake.py. Modules:
- zygote.py   the spawner process: preload, warm-up, capabilities, the order loop, the fork

Why (benchmarks/README.md, "Supervisor"): every fork+exec'd worker imports its libraries on
its own (~19 MiB private heap each, ~145 ms per start). Forked from one process that imported
them once, the workers of a boot share those pages. (requests, cryptography and asn1crypto
are no longer in the image: the resident workers never load them; issue 17, zygote.py.)

How it keeps DESIGN.md principle 7 (a clean image):
- The spawner is **fork+exec'd** by the supervisor (launch/, identity None: it
  stays root, which it needs to drop children to the worker users), not forked from it. A
  fork of the supervisor would carry the supervisor's heap — the parsed configuration, log
  buffers, whatever the broker has seen — and its descriptors; a fresh interpreter carries
  nothing but what it imports, at any moment the supervisor starts or restarts it. It is
  started in Supervisor.open(), before the first worker and before any worker has sent the
  supervisor anything.
- Its image: fd 0 /dev/null, 1 and 2 its log pipe (filed as spawner.log), 3 its channel to the
  supervisor; a clean environment; PR_SET_PDEATHSIG(SIGKILL) tied to the supervisor;
  NO_NEW_PRIVS. It imports the worker modules and what they import, then `gc.freeze()`s the
  heap (so the collector does not write to, and un-share, the preloaded objects) and says
  `spawner.ready`. It handles no platform data, no secret and no file: a spawn order holds a
  worker name, a module name, uid/gid, the worker's cgroup and its environment (no secret in
  it either: secrets never go on argv or in the environment).
- It obeys one verb, `spawner.spawn` (ipc/verbs/spawner.py, strict schema, exactly two
  descriptors: the worker's channel end and log pipe), from its own socketpair only.

Who is the worker's parent — a double fork onto a subreaper: the supervisor sets
PR_SET_CHILD_SUBREAPER; the spawner forks an intermediate that forks the worker and exits at
once, so the worker is reparented to the supervisor. The supervisor then reaps and signals
the worker by pid exactly as a fork+exec'd one (waitpid per pid, states, backoff, hang and
memory checks, stop order), a dead spawner takes no worker with it, and PDEATHSIG ties each
worker to the supervisor, not to the spawner. The other way (workers as the spawner's
children, exit statuses relayed) would make the spawner a second supervisor, lose the
statuses whenever it dies, and tie the workers' lives to it. The worker arms PDEATHSIG only
after the reparent and checks getppid() afterwards (launch/ _become_worker), so a
supervisor dying in between cannot leave it behind.

In the worker, before its main: the same steps as the exec path (spawn._become_worker: into
the worker's cgroup when the order names one (supervisor/trees.py), own session, only its
channel on 3, log pipe on 1+2, /dev/null on 0, every other descriptor closed
— the spawner's socket included —, bounding and ambient capabilities emptied, setgroups([]),
gid guestagent-wire, uid, PDEATHSIG, NO_NEW_PRIVS, signals reset, umask 077, cwd /), then
the interpreter's own start-up dispositions (SIGPIPE/SIGXFSZ ignored, SIGINT raises), the
environment cleared to the order's, `random` re-seeded from os.urandom, the process title,
and `runpy` runs `<module>.__main__` as `python -I -m` does (the spawner itself runs with -I).
What stays shared with the spawner: the preloaded modules (that is the point) and the
interpreter's string-hash seed (PYTHONHASHSEED randomisation happens once per exec: all
workers forked from one spawner share it; it protects dicts against hash flooding, and the
workers parse untrusted input, so a worker fork+exec'd after the spawner gives new seeds).
OpenSSL's RNG reseeds itself after fork (OpenSSL >= 1.1.1 checks the pid).

If the spawner cannot start, fails an order or dies, the supervisor logs it and falls back to
fork+exec for the rest of the run: the spawner lives only through the boot anyway, and a root
process that misbehaved is not trusted again. Once the boot's workers run and it has had nothing to
start for `Agent.SpawnerRetireAfter` seconds, the supervisor retires it (its private pages and
its capabilities go; later restarts are fork+exec'd). `Agent.Spawner=exec` skips the spawner
altogether.
"""
