"""Tracking controllers: what drives the simulated character along its reference."""
