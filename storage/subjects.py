"""Names of every NATS subject, stream, consumer and bucket, derived from one namespace.

Every subject carries the tenant where it addresses tenant data, so permissions can be scoped per tenant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Names:
    """The NATS names of one Salon deployment (``namespace`` keeps deployments apart on one server)."""

    namespace: str = "salon"

    @property
    def turns_stream(self) -> str:
        """JetStream work-queue stream holding turns until a host has finished them."""
        return f"{self.namespace.upper()}_TURNS"

    @property
    def events_stream(self) -> str:
        """JetStream stream holding turn events for the retention time (replay, join, resume)."""
        return f"{self.namespace.upper()}_EVENTS"

    @property
    def ledger_stream(self) -> str:
        """JetStream stream of turn outcomes and snapshots: the write-ahead log of every session."""
        return f"{self.namespace.upper()}_LEDGER"

    def ledger_turns(self, tenant_id: str, session_id: str) -> str:
        """Subject of a session's turn records and activation markers (one fenced sequence per session)."""
        return f"{self.namespace}.ledger.{tenant_id}.{session_id}.t"

    def ledger_snapshots(self, tenant_id: str, session_id: str) -> str:
        """Subject of a session's snapshots."""
        return f"{self.namespace}.ledger.{tenant_id}.{session_id}.s"

    def ledger_session(self, tenant_id: str, session_id: str) -> str:
        """Every ledger subject of a session."""
        return f"{self.namespace}.ledger.{tenant_id}.{session_id}.*"

    @property
    def ledger_wildcard(self) -> str:
        """Every ledger subject."""
        return f"{self.namespace}.ledger.>"

    writer_consumer = "writer"
    """Durable consumer through which the batch writer reads the ledger."""

    memory_consumer = "memory"
    """Durable consumer through which the long-term memory indexer reads the ledger's turn records."""

    @property
    def ledger_turns_wildcard(self) -> str:
        """Every ledger subject of turn records (not snapshots)."""
        return f"{self.namespace}.ledger.*.*.t"

    @property
    def sessions_bucket(self) -> str:
        """Key-value bucket of session definitions."""
        return f"{self.namespace}_sessions"

    @property
    def leases_bucket(self) -> str:
        """Key-value bucket of shard leases and host presence (entries expire unless renewed)."""
        return f"{self.namespace}_leases"

    @property
    def tool_answers_bucket(self) -> str:
        """Key-value bucket of tool results and approval decisions taken while a turn's host was away (entries
        expire after their call's wait deadline)."""
        return f"{self.namespace}_tool_answers"

    def turn_subject(self, shard: int) -> str:
        """Subject of the turns of ``shard``."""
        return f"{self.namespace}.turns.{shard}"

    @property
    def turns_wildcard(self) -> str:
        """Subjects of all turns."""
        return f"{self.namespace}.turns.*"

    def shard_consumer(self, shard: int) -> str:
        """Durable consumer through which a host pulls the turns of ``shard``."""
        return f"shard-{shard}"

    def event_subject(self, tenant_id: str, session_id: str, turn_id: str) -> str:
        """Subject of one turn's events."""
        return f"{self.namespace}.events.{tenant_id}.{session_id}.{turn_id}"

    @property
    def events_wildcard(self) -> str:
        """Subjects of all events."""
        return f"{self.namespace}.events.>"

    def control_subject(self, shard: int) -> str:
        """Subject on which the host owning ``shard`` takes requests about its sessions (cancel)."""
        return f"{self.namespace}.control.{shard}"

    @staticmethod
    def session_key(tenant_id: str, session_id: str) -> str:
        """Key of a session in the buckets."""
        return f"{tenant_id}.{session_id}"
