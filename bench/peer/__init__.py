"""The peer benchmark (issue 15): one closed-loop load generator driving the LangGraph library in-process,
``langgraph dev`` over HTTP and Salon over gRPC, side by side (``python -m bench.peer --help``).

Modules: ``stats`` (percentiles and a level's figures), ``procs`` (process trees, CPU from /proc, ports,
clean-up), ``load`` (the load generator), ``drive`` (the driver process: one system, one level, JSON out),
``targets_salon`` and ``targets_langgraph`` (how a turn is sent to each system), ``lg_graph`` (the LangGraph
chat graph and its fake model), ``servers`` (starting ``salon serve`` and ``langgraph dev``), ``report`` (the
table), ``__main__`` (the harness). Everything but the harness, the servers and the Salon target uses the
standard library or LangGraph only, so the LangGraph side runs under the peer venv's Python
(``bench/peer/requirements.txt``).

Type-checked in two parts, each in the venv that has its libraries: ``mypy --strict bench/peer --exclude
'(lg_graph|targets_langgraph).py'`` with the engine's venv, and ``mypy --strict --python-executable
bench/peer/.venv/bin/python bench/peer/lg_graph.py bench/peer/targets_langgraph.py``.
"""
