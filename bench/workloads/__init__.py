"""The workload registry: one module per workload, each exporting ``WORKLOAD``.

A workload is an async function doing ONE run and returning a
:class:`~bench._measure.RunOutput`; the harness repeats it and takes medians.
To add one: write ``bench/workloads/<name>.py`` with a ``WORKLOAD = Workload(...)`` and list the
module below.
"""

from __future__ import annotations

import importlib

from bench._context import Workload

__all__ = ["SUITE", "WORKLOADS", "Workload"]


_MODULES = ("append", "write", "latency", "activate", "memory", "rebuild", "lag", "floor")

WORKLOADS: dict[str, Workload] = {}
for _name in _MODULES:
    _wl: Workload = importlib.import_module(f"bench.workloads.{_name}").WORKLOAD
    WORKLOADS[_wl.name] = _wl
WORKLOADS["eventsourcing"] = importlib.import_module("bench._compare_eventsourcing").WORKLOAD

SUITE = ("append", "write", "latency", "activate", "memory", "rebuild", "lag")
"""What ``python -m bench`` runs (``floor`` joins with ``--floor``, the
eventsourcing comparison with ``--compare eventsourcing``)."""
