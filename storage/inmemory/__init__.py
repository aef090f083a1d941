"""In-memory references of the storage contracts: the same behaviour as the adapters (the contract suites in
``tests/contract`` run both), for unit tests and for a gateway without NATS (the usage counters). Plain
Python: no NATS, LanceDB or Arrow."""

from salon.storage.inmemory.leases import InMemoryLeaseStore
from salon.storage.inmemory.ledger import InMemoryJournal
from salon.storage.inmemory.retrieval import InMemoryRetriever
from salon.storage.inmemory.sessions import InMemorySessionRegistry
from salon.storage.inmemory.tool_answers import InMemoryAnswerStore
from salon.storage.inmemory.usage import InMemoryTokenCounters, InMemoryTurnCounters

__all__ = [
    "InMemoryAnswerStore",
    "InMemoryJournal",
    "InMemoryLeaseStore",
    "InMemoryRetriever",
    "InMemorySessionRegistry",
    "InMemoryTokenCounters",
    "InMemoryTurnCounters",
]
