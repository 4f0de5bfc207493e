"""The manager's service layer (see service.py): every operation on the cluster, between the Docker API's
handlers (shoal/api/docker, parse and render) and the cluster cache (shoal/cluster) and the pure deciders
(shoal/scheduler, shoal/data)."""
