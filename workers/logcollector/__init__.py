"""The logcollector worker (see __main__.py)."""
