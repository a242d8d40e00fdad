"""Observability: counters, memory, report parts, alerts, the stall watchdog, logs.

- ``metrics.py``: per-stage counters, report snapshots and their merge;
- ``memory.py``: RSS, peaks, available memory, GPU;
- ``report.py``: the dataset's ``report()`` and bucket statistics;
- ``alerts.py``: alert thresholds and the edge-triggered monitor;
- ``watchdog.py``: the stall watchdog;
- ``logs.py``: the JSON-lines log handler.
"""
