"""Destinations: class by port, host and port sketch bits (pairs with _pxi/destinations.pxi)."""

from __future__ import annotations

from .._spec import FNV_OFFSET, GOLDEN, PORT_SALT
from .parse import _DIGITS, _M64, fmix64


def sketch_bit(h: int) -> int:
    return 1 << (fmix64(h) >> 58)


def _port_in(text: str) -> int:
    if not 1 <= len(text) <= 5 or not _DIGITS.issuperset(text):
        return -1
    port = int(text)
    return port if port <= 65535 else -1


def _mix_word(h: int, word: int) -> int:
    h = ((h ^ word) * GOLDEN) & _M64
    return h ^ (h >> 32)


_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def _text_hash(text: str, seed: int, fold_case: bool) -> int:
    """Hash text, ASCII case folded if asked, as _core_c's _text_hash.

    Text whose code points all fit a byte is read 8 bytes per step (little
    endian); wider text one code point per step.
    """
    h = seed ^ len(text)
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        for ch in text:
            c = ord(ch)
            h = _mix_word(h, c + 32 if fold_case and 65 <= c <= 90 else c)
        return h
    if fold_case:
        data = data.translate(_ASCII_LOWER)
    for i in range(0, len(data), 8):
        h = _mix_word(h, int.from_bytes(data[i:i + 8], "little"))
    return h


def host_hash(host: str) -> int:
    """The hash a destination host is known by (ASCII case folded): watch-lists hold these."""
    if not isinstance(host, str):
        raise TypeError(f"host must be str, not {type(host).__name__}")
    return _text_hash(host, FNV_OFFSET, True)


def classify(destination: object, port_class: bytes, watch: frozenset[int] = frozenset(),
             watch_class: int = 0) -> tuple[int, int, int]:
    """Return (class, host_bit, port_bit); unparsable text counts as "other".

    A host on the watch-list (its host_hash in ``watch``) is of class
    ``watch_class`` whatever its port.
    """
    if destination is None:
        return 0, 0, 0
    if not isinstance(destination, str):
        raise TypeError(f"destination must be str or None, not {type(destination).__name__}")
    if not destination:
        return 0, 0, 0
    host = destination
    port = -1
    if destination[0] == "[":
        close_at = destination.find("]", 1)
        if close_at > 1:
            if close_at == len(destination) - 1:
                host = destination[1:close_at]
            elif destination[close_at + 1] == ":":
                port = _port_in(destination[close_at + 2:])
                if port >= 0:
                    host = destination[1:close_at]
    else:
        colon = destination.find(":")                # one ':' only: see _core_c
        if colon > 0:
            port = _port_in(destination[colon + 1:])
            if port >= 0:
                host = destination[:colon]
    h = _text_hash(host, FNV_OFFSET, True)
    host_bit = sketch_bit(h)
    port_bit = sketch_bit(port ^ PORT_SALT) if port >= 0 else 0
    if watch and h in watch:
        return watch_class, host_bit, port_bit
    return (port_class[port] if port >= 0 else 0), host_bit, port_bit
