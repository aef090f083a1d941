"""The storage contracts on LanceDB (and Arrow): the tables' schemas (``schemas``), long-term memory rows
(``memories``), the hybrid retriever (``retrieval``) and the knowledge base (``knowledge``). The transcript
store beside them is ``storage.tables``.

Imported from their own modules by the composition roots (``engine.app``, ``actors.ray_host``) and by tests,
never through this package: a process loads only the adapters it builds.
"""
