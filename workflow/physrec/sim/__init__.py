"""Simulator backends behind one interface."""
