"""Example read models (SQLite, with their queries) and process managers.

They live in ``runtime`` because read models do I/O; the domains they read
(``aggregates/examples``) stay pure.
"""
