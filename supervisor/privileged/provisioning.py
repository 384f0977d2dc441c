"""The broker's provisioning verbs (ipc/verbs/provisioning.py): importing this registers them."""

from supervisor.privileged import (accounts, customdata, dvd, hostname, ssh,  # noqa: F401
                                   state)
