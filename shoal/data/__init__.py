"""Data services: datasets with storage profiles, snapshots and clones (the seed's Flocker), moves and
replicas, decided as plain data (model, requests, plan, moves: pure) and kept as records in the registry
(records.py); the agent's data service carries them out on its node's pool (pool/) in its convergence
loop (shoal.agent.datasets, shoal.agent.convergence), the volume plugin only parsing and rendering."""
