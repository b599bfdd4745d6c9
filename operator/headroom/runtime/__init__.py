"""The operator process: watches -> event-to-key -> coalescing queue -> workers
-> the reconcile pass; leadership; health; admission in its own process.

:mod:`.process` starts and stops everything; :mod:`.events` turns cache events
into queued profile keys; :mod:`.cluster` is the pass's view of the caches;
:mod:`.queue` the coalescing queue; :mod:`.share_table` who shares which
Postgres server; :mod:`.health` the probes' endpoints; :mod:`.admission` the
webhook. What is watched is declared in :mod:`headroom.reconcile.watches`.
"""
