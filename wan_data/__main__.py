"""``python -m wan_data``: the same as the ``wan-data`` console script."""

from .cli import main

raise SystemExit(main())
