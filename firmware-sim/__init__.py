"""Simulated loggers: device emulators that speak the real protocols with scenario-driven values.

Importable as ``coldtrail.sim``. The emulators implement each device's documented register
map on their own; they never read the edge's device profiles, so a wrong profile is caught.
"""
