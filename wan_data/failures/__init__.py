"""Failures: what every error means, and the one mechanism that turns it into a record.

- ``mechanism.py``: ``map_stage`` (every stage's per-item work runs under it), ``StageContext``,
  ``partial_failure``, ``drop_failed``;
- ``policy.py``: ``ErrorPolicy``, which classifies every exception (fatal / retry / skip / warn);
- ``breaker.py``: the per-stage circuit breaker and the filter reasons it does not count;
- ``ledger.py``: the persistent ledger of known-bad files (its stage is ``stages/ledger.py``).
"""
