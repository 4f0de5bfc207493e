"""Simulated nodes and engines, for one job only: measuring the scheduler and the manager at sizes one
machine cannot run for real (nodes.py: node documents through the same road as real agents; engines.py:
in-memory engines speaking the parts of the Docker Engine API the manager uses, held to a real dockerd by
tests/contract/test_engine.py)."""
