"""The unprivileged workers, each run by the supervisor as `python -I -m workers.<name>` under
its own user (supervisor/table.py). base.py is what they share; platform/ is the shared
client of the WireServer and HostGAPlugin."""
