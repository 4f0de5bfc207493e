"""Data services: datasets with storage profiles, snapshots and clones (the seed's Flocker), decided as
plain data (model, plan) and carried out on a node's pool (pool/) by the agent's volume plugin."""
