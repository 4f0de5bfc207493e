"""The manager's HTTP edges: the Docker Engine API for the whole cluster (docker/, parse and render; the
operations are shoal.manager's), the join listener agents get their certificates from (public.py), the
dashboard page (dashboard/) and the TLS alert a refused client hears (tls_alerts.py). The Consul API is
the registry's own edge (shoal.registry.http)."""
