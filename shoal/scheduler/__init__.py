"""Placement: expressions, filters, strategies over plain node data. No I/O here."""
