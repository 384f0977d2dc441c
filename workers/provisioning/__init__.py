"""The provisioning worker (see __main__.py)."""
