"""The storage contracts on NATS JetStream: the turn bus (``bus``), the ledger (``ledger``), session
definitions, their change feed and the usage counters in key-value buckets (``sessions``,
``session_changes``, ``usage``), and connecting (``client``).

Imported from their own modules by the composition roots (``engine.app``, ``actors.ray_host``) and by tests,
never through this package: a process loads only the adapters it builds.
"""
