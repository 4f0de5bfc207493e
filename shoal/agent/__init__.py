"""The node agent: gathers facts, publishes them to the registry, keeps its node's check alive."""
