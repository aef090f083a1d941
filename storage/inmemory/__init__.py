"""In-memory references of the storage contracts: the same behaviour as the adapters (the contract suites in
``tests/contract`` run both), for unit tests and for a gateway without NATS (the token counters). Plain
Python: no NATS, LanceDB or Arrow."""

from storage.inmemory.ledger import InMemoryJournal
from storage.inmemory.retrieval import InMemoryRetriever
from storage.inmemory.sessions import InMemorySessionRegistry
from storage.inmemory.usage import InMemoryTokenCounters

__all__ = ["InMemoryJournal", "InMemoryRetriever", "InMemorySessionRegistry", "InMemoryTokenCounters"]
