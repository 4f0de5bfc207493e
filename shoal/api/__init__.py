"""The edges that speak other systems' HTTP APIs (Consul now; Docker Engine next)."""
