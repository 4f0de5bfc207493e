"""The node agent: gathers facts and publishes them to the registry, keeping its node's check alive
(facts/, loop.py, publish.py); runs the node's data service (datasets.py: the pool, its convergence loop,
the Docker volume plugin) and serves and pulls dataset streams for moves and replicas (transfer.py);
joins the cluster with a token for a node certificate (join.py)."""
