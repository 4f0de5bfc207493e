"""shoal: a cluster manager for Docker."""

__version__ = "0.1.0"
