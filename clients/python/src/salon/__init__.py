"""Salon's Python client: ``salon.v1`` (generated gRPC stubs) and ``salon.client`` (the async client)."""
