"""The benchmark harness: ``python -m bench`` (``make bench``).

Runs registered workloads (``bench/workloads/``) through the public API of
``runtime``, ``stores`` and ``aggregates``, repeats each run, and prints the
median and min-max spread of every figure, beside the raw floor (plain
sqlite3, fsync) or the ``eventsourcing`` library where measured in the same
run. See ``python -m bench --help``.
"""
