"""A retrieval evaluation of long-term memory on generated multi-session conversations (``python -m
bench.memory_eval``): see :mod:`bench.memory_eval.generate` for the data and :mod:`bench.memory_eval.__main__`
for how it runs."""
