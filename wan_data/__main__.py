"""``python -m wan_data``: the same as the ``wan-data`` console script."""

from wan_data.tools.cli import main

raise SystemExit(main())
