"""Sharing infractions and bans across a fleet of nodes (layer 4; extra: redis).

May import bans and guard; nothing below imports it, and ``import connguard``
never does.
"""
