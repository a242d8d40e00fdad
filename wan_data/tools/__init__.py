"""Tools: the ``wan-data`` command line, the dataset doctor and the demo data.

- ``cli.py``: ``wan-data demo | cache | scan | import | bench`` (flags generated from the
  configuration); ``cli_reference.py`` renders its ``--help`` texts into ``docs/cli.md``;
- ``scan.py``, ``scan_report.py``, ``scan_table.py``, ``plots.py``: ``wan-data scan``;
- ``import_command.py``: ``wan-data import`` (the mapping is :mod:`wan_data.config.importing`);
- ``bench_command.py`` and ``bench/``: ``wan-data bench``;
- ``synthetic.py``: the generated demo dataset and tiny random VAEs.
"""
