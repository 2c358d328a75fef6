"""Sharing infractions and bans across a fleet of nodes (layer 4; extra: redis).

``redis`` (RedisFleet: a BanManager's events over a Redis Stream, needs
redis-py), ``entries`` (the stream's entry format, checked), ``stats``
(FleetStats) and ``metrics`` (FleetCollector, needs prometheus_client).
May import bans and guard; nothing below imports it, and ``import
connguard`` never does. This package imports none of its modules, so it
imports without redis-py.
"""
