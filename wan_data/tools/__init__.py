"""Tools: the ``wan-data`` command line, the dataset doctor and the demo data.

- ``cli.py``: ``wan-data demo | cache | scan`` (flags generated from the configuration);
- ``scan.py``, ``scan_report.py``, ``scan_table.py``, ``plots.py``: ``wan-data scan``;
- ``synthetic.py``: the generated demo dataset and tiny random VAEs.
"""
