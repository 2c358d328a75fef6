"""Drop-in integrations: asyncio, ASGI, proxies (layer 4).

May import guard and below; nothing below imports it, and ``import
connguard`` never does.
"""
