"""`python -I -m spawner`: the preloaded spawner process (see spawner/__init__.py)."""

import sys

from spawner.zygote import main

sys.exit(main())
