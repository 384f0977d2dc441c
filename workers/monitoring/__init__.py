"""The monitoring worker (see __main__.py)."""
