"""Simulated nodes, for one job only: the scheduler at a scale one machine cannot run for real."""
