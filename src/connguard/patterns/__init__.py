"""Abuse patterns read from destination buckets (layer 2, beside tracker.py).

Pattern names and bits are part of the core contract (``connguard._spec``);
their thresholds and configuration live here. Imports: _spec, _validate.
"""
