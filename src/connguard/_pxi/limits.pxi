# Token buckets with escalating violations (pairs with _core_py/limits.py).

cdef struct Bucket:
    Header hdr                # hdr.stamp: when the tokens were last refilled
    double tokens
    double last_violation
    uint32_t violations       # denied requests in the current violation window
    uint32_t _pad


cdef struct LimitConfig:
    double rate               # tokens per second
    double burst              # bucket size; a new key starts full
    double violation_window   # the count restarts after this long without one
    uint32_t warn_after       # violations up to this many are warnings
    uint32_t abuse_after      # from this many on, rate_limit_abuse


cdef int bucket_take(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double now,
                     const LimitConfig* cfg, uint64_t seed, uint32_t* violations) noexcept nogil:
    """Spend one token; return TAKE_ALLOWED or the escalation level of the denial.

    ``violations`` receives the key's count of denials in the current window.
    """
    cdef Bucket* b = <Bucket*>table_find(self, hi, lo, h)
    cdef double tokens
    violations[0] = 0
    if b == NULL:
        b = <Bucket*>table_insert(self, hi, lo, h, now, seed)
        if b == NULL:                            # out of memory: allow, counted as overflow
            return TAKE_ALLOWED
        b.tokens = cfg.burst
    elif now > b.hdr.stamp:
        tokens = b.tokens + (now - b.hdr.stamp) * cfg.rate
        b.tokens = cfg.burst if tokens > cfg.burst else tokens
        b.hdr.stamp = now
    elif b.hdr.stamp - now > cfg.burst / cfg.rate:
        # The clock went back further than a full refill takes: it was reset
        # (or an earlier time was far in the future). Refill from now on.
        b.hdr.stamp = now
        if b.last_violation > now:
            b.last_violation = now
    if b.tokens >= 1.0:
        b.tokens -= 1.0
        return TAKE_ALLOWED
    if b.violations and now - b.last_violation > cfg.violation_window:
        b.violations = 0
    if b.violations < 0xFFFFFFFFU:
        b.violations += 1
    b.last_violation = now
    violations[0] = b.violations
    if b.violations <= cfg.warn_after:
        return TAKE_WARNING
    if b.violations < cfg.abuse_after:
        return TAKE_VIOLATION
    return TAKE_ABUSE


cdef class BucketTable(ShardedTable):
    """Token buckets per key with escalating violations: connguard.RateLimiter's core."""

    cdef LimitConfig _cfg     # written once in __init__

    def __init__(self, *, uint64_t capacity, uint32_t shards, double rate, double burst,
                 uint32_t warn_after, uint32_t abuse_after, double violation_window,
                 int ipv4_prefix, int ipv6_prefix, object clock, uint64_t seed):
        self._setup(capacity, shards, sizeof(Bucket), ipv4_prefix, ipv6_prefix, clock, seed)
        self._cfg.rate = rate
        self._cfg.burst = burst
        self._cfg.warn_after = warn_after
        self._cfg.abuse_after = abuse_after
        self._cfg.violation_window = violation_window

    cdef inline int _bucket_key(self, object key, uint64_t* hi, uint64_t* lo) except -1:
        """An address keys its netblock's bucket (the one the Guard spends);
        other text keys its own."""
        cdef Py_ssize_t n
        cdef int family
        if not PyUnicode_Check(key):
            key = peer_host(key, "key")
        n = PyUnicode_GET_LENGTH(key)
        if 0 < n <= _MAX_SOURCE and PyUnicode_IS_ASCII(key):
            family = parse_source_bytes(<const uint8_t*>PyUnicode_DATA(key), n, hi, lo)
            if family:
                netblock_mask(self, family, hi, lo)
                hi[0] ^= _LIMIT_SALT
                return 0
        # Two independent 64-bit hashes: a 128-bit key, so distinct keys
        # never share a bucket in practice, and no key text is stored.
        hi[0] = _text_hash(PyUnicode_KIND(key), PyUnicode_DATA(key), 0, n,
                           self._seed ^ _GOLDEN, False)
        lo[0] = _text_hash(PyUnicode_KIND(key), PyUnicode_DATA(key), 0, n,
                           self._seed ^ _PORT_SALT, False)
        return 0

    cdef inline int _take(self, object key, object now) except -1:
        cdef uint64_t hi, lo
        cdef uint32_t violations
        self._bucket_key(key, &hi, &lo)
        return limit_take(self, hi, lo, self._now(now), &violations)

    @cython.binding(False)
    def allow(self, key, now=None):
        """Spend a token for ``key``; True when one was there."""
        return self._take(key, now) == TAKE_ALLOWED

    @cython.binding(False)
    def take(self, key, now=None):
        """Spend a token for ``key``; 0 allowed, else 1 warning, 2 violation, 3 abuse."""
        return self._take(key, now)

    def state(self, key, now=None):
        """Return ``(tokens, violations)`` for a key as of its last request, or None."""
        cdef uint64_t hi, lo
        cdef Bucket b
        self._bucket_key(key, &hi, &lo)
        return (b.tokens, b.violations) if self._copy_entry(hi, lo, &b) else None


cdef inline int limit_take(BucketTable limiter, uint64_t hi, uint64_t lo, double t,
                           uint32_t* violations) noexcept:
    cdef uint64_t h = key_hash(hi, lo, limiter._seed)
    cdef Py_ssize_t i = h & limiter._shard_mask
    cdef int code
    shard_lock(limiter, i)
    code = bucket_take(&limiter._tables[i], hi, lo, h, t, &limiter._cfg, limiter._seed, violations)
    shard_unlock(limiter, i)
    return code
