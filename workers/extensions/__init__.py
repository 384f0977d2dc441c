"""The extensions worker (see __main__.py)."""
