"""Planning: from sources to planned batches, and back to where a run stopped.

- ``construction.py``: the one construction path (collect, probe, index stages, buckets);
- ``sample_list.py``: the sample list from the sample index, or constructed;
- ``clips.py``: which windows and crops a source yields (pure);
- ``plan.py``: the epoch batch plan (pure);
- ``batches.py``: planned batches read through the stages, failed members replaced;
- ``epochs.py``: the epoch of each pass and the progress, in shared memory;
- ``state.py``, ``resume.py``: ``state_dict``/``load_state_dict``, and what a refused state
  differs in.
"""
