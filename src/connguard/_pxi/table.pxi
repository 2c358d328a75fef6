# Sharded, bounded tables of entries that start with a Header (pairs with
# _core_py/table.py). A Table holds entries of one type; the Header is all
# the table itself reads (key, eviction order, whether evictable).

cdef struct Header:
    # ``stamp`` is a time, and a full table evicts the sampled entry with the
    # smallest one first: when a source was last seen, when a ban ends, when
    # a bucket was last refilled.
    uint64_t key_hi
    uint64_t key_lo
    double stamp              # eviction order: smallest first
    uint32_t active           # > 0: never evicted
    uint8_t patterns          # Pattern bits (source entries)
    uint8_t reported          # pattern bits already announced (logged once per pattern)
    uint16_t rare             # number of the entry's pattern-state record; 0 for none


cdef struct Buckets:
    # The window buckets around the latest time a source table's rolls saw
    # (sources.pxi, buckets_at): a time t is in that time's bucket exactly
    # when start <= t < end, and in the bucket before exactly when
    # prev_start <= t < start. Empty (start == end) until first set.
    double prev_start
    double start
    double end


cdef struct Table:
    # One shard's open-addressing table and counters, guarded by its Shard's
    # lock. Entries are ``esize`` bytes each and start with a Header.
    char* entries             # dense: entries 0..n-1, swap-removed on eviction
    uint32_t esize            # sizeof(Header) to 128 bytes (table_find's prefetch)
    uint32_t* index           # slot -> tag | entry position + 1; 0 is an empty slot
    uint32_t index_mask
    uint32_t tag_mask         # a slot's bits above any position + 1 (see table_tag)
    uint32_t pos_mask         # ~tag_mask: the bits of a position + 1
    uint32_t n
    uint32_t allocated        # entries has room for this many
    uint32_t capacity         # hard bound on n
    uint64_t rng              # xorshift64* state for eviction sampling
    int64_t active_connections
    uint32_t active_sources   # entries with hdr.active > 0: never evicted
    uint32_t flagged_sources  # entries with hdr.patterns != 0
    uint32_t flagged_by[8]    # entries with each Pattern bit set
    uint64_t evictions
    uint64_t overflows
    # Connections counted open but untracked (no room for their source), by
    # netblock, for at most _UNTRACKED_SLOTS netblocks (allocated on first
    # use): their closes are absorbed here instead of closing a tracked one.
    Untracked* untracked
    uint32_t untracked_n      # slots in use
    uint64_t untracked_lost   # untracked opens that found no slot
    # Pattern-state records (source tables only; pool_capacity is 0 elsewhere),
    # numbered 1..pool_capacity, allocated on first use. Records 1..pool_len
    # have been handed out; pool_free holds the numbers of freed ones, a stack.
    Record* pool
    uint16_t* pool_free
    uint32_t pool_capacity
    uint32_t pool_len
    uint32_t pool_nfree
    uint32_t pool_used
    uint16_t pool_flagged     # first record of the list of those whose owner is flagged
    uint64_t pool_full        # records wanted when none could be had
    Buckets buckets           # source tables: where their entries' window buckets lie
    uint64_t class_accepts[_MAX_CLASSES]   # accepts counted, by destination class
    uint64_t raised_by[8]     # times each Pattern bit was raised


cdef struct Untracked:
    uint64_t key_hi
    uint64_t key_lo
    uint64_t count            # 0: the slot is free


@cython.final
cdef class Shard:
    """The lock of one shard: a table's _tables[i] is guarded by _shards[i].lock.

    A scalar pymutex in its own small object: a C array of pymutex crashes on
    CPython < 3.13, where Cython backs each one with a PyThread lock.
    """

    cdef cython.pymutex lock


cdef inline Header* table_at(Table* self, uint32_t pos) noexcept nogil:
    return <Header*>(self.entries + <size_t>pos * self.esize)


cdef inline uint32_t home_slot(Table* self, uint64_t h) noexcept nogil:
    """The first index slot a key hashed ``h`` probes: hash bits 8 and up
    (the bits below them pick the key's shard, of at most 256)."""
    return <uint32_t>(h >> 8) & self.index_mask


cdef inline uint32_t table_home(Table* self, Header* e, uint64_t seed) noexcept nogil:
    """home_slot of an entry's key."""
    return home_slot(self, key_hash(e.key_hi, e.key_lo, seed))


cdef inline uint32_t table_tag(Table* self, uint64_t h) noexcept nogil:
    """The bits of a key's hash its index slot keeps beside the entry's position.

    A probe reads an entry only when the slot's tag matches, so a slot of
    another key costs no entry load but once in 2**(tag bits) (18 bits at
    the default capacity's 15,625 entries a shard; none at 2**31 or more).
    The tag is hash bits 32 + p and up, p the bits a position + 1 needs;
    the home slot takes bits 8 to 8 + log2(slots) - 1, and an index has at
    most max(8, 2**(p + 1)) slots, so the home bits end below bit 32 + p:
    the keys that probe past a slot differ in their tags as in any other
    hash bits.
    """
    return <uint32_t>(h >> 32) & self.tag_mask


cdef inline uint32_t slot_pos(Table* self, uint32_t s) noexcept nogil:
    """The entry position a slot in use points at."""
    return (s & self.pos_mask) - 1


cdef inline uint64_t table_next_random(Table* self) noexcept nogil:
    cdef uint64_t x = self.rng
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    self.rng = x
    return x * CG_XORSHIFT_STAR


cdef inline Header* table_find(Table* self, uint64_t hi, uint64_t lo, uint64_t h) noexcept nogil:
    """Return the entry for a key, or NULL."""
    cdef uint32_t slot = home_slot(self, h)
    cdef uint32_t s, tag = table_tag(self, h)
    cdef Header* e
    if self.index == NULL:
        return NULL
    while True:
        s = self.index[slot]
        if s == 0:
            return NULL
        s ^= tag                  # the tags match exactly when no tag bit is left
        if s <= self.pos_mask:    # then s is the position + 1
            e = table_at(self, s - 1)
            # Entries are not line-aligned, so one may span two cache lines
            # (a source's, 112 bytes, two or three). The caller reads all of
            # the entry once the key matches, which it nearly always does
            # when the tag does: start loading the lines after the key's now,
            # beside it, not one after another behind the compare. Entries
            # are at most 128 bytes, so these two addresses reach every line.
            CG_PREFETCH(<char*>e + self.esize - 1)
            if self.esize > 64:
                CG_PREFETCH(<char*>e + 64)
            if e.key_lo == lo and e.key_hi == hi:
                return e
        slot = (slot + 1) & self.index_mask


cdef uint32_t table_slot_of(Table* self, uint32_t pos, uint64_t seed) noexcept nogil:
    """Return the index slot that points at entry ``pos``."""
    cdef uint32_t slot = table_home(self, table_at(self, pos), seed)
    while self.index[slot] & self.pos_mask != pos + 1:
        slot = (slot + 1) & self.index_mask
    return slot


cdef bint table_grow(Table* self, uint64_t seed) noexcept nogil:
    """Double the entry array (up to capacity) and rebuild the index.

    Plain libc allocation: safe under the lock (no Python), and a failure
    is reported to the caller, which counts it as an overflow.
    """
    cdef uint32_t want = self.allocated * 2 if self.allocated else 16
    cdef uint32_t slots = 8, i, slot
    cdef uint64_t h
    cdef Header* e
    cdef char* entries
    cdef uint32_t* index
    if want > self.capacity:
        want = self.capacity
    while slots < want + want // 4:          # load factor <= 0.8
        slots *= 2
    entries = <char*>realloc(self.entries, <size_t>want * self.esize)
    if entries == NULL:
        return False
    self.entries = entries
    index = <uint32_t*>calloc(slots, sizeof(uint32_t))
    if index == NULL:
        return False
    free(self.index)
    self.index = index
    self.index_mask = slots - 1
    self.allocated = want
    for i in range(self.n):
        e = table_at(self, i)
        h = key_hash(e.key_hi, e.key_lo, seed)
        slot = home_slot(self, h)
        while index[slot] != 0:
            slot = (slot + 1) & self.index_mask
        index[slot] = table_tag(self, h) | (i + 1)
    return True


cdef void table_remove(Table* self, uint32_t pos, uint64_t seed) noexcept nogil:
    """Drop entry ``pos``: backward-shift delete in the index, swap-remove."""
    cdef uint32_t hole = table_slot_of(self, pos, seed), j, home, last, moved
    cdef uint32_t mask = self.index_mask
    if table_at(self, pos).rare:
        pool_release(self, table_at(self, pos).rare)
    j = hole
    while True:
        j = (j + 1) & mask
        if self.index[j] == 0:
            break
        home = table_home(self, table_at(self, slot_pos(self, self.index[j])), seed)
        # Move j into the hole unless its home lies cyclically in (hole, j].
        if ((j - home) & mask) >= ((j - hole) & mask):
            self.index[hole] = self.index[j]
            hole = j
    self.index[hole] = 0
    self.n -= 1
    last = self.n
    if pos != last:
        moved = table_slot_of(self, last, seed)
        self.index[moved] = (self.index[moved] & self.tag_mask) | (pos + 1)
        memcpy(table_at(self, pos), table_at(self, last), self.esize)


cdef bint table_evict_one(Table* self, uint64_t seed) noexcept nogil:
    """Evict the idlest of a few sampled entries that are not busy.

    When the samples are all busy, scan from a random point: an idle
    entry exists (checked first), so the scan ends, and it only runs
    when nearly every entry is busy.
    """
    cdef uint32_t _sample, i, best = 0
    cdef bint found = False
    cdef Header* e
    if self.n == 0 or self.active_sources >= self.n:
        return False
    for _sample in range(_SAMPLES):
        i = <uint32_t>(table_next_random(self) % self.n)
        e = table_at(self, i)
        if e.active == 0 and (not found or e.stamp < table_at(self, best).stamp):
            best = i
            found = True
    if not found:
        i = <uint32_t>(table_next_random(self) % self.n)
        while table_at(self, i).active != 0:
            i = (i + 1) % self.n
        best = i
    table_flags_changed(self, table_at(self, best).patterns, 0)
    table_remove(self, best, seed)
    self.evictions += 1
    return True


cdef void table_flags_changed(Table* self, uint8_t before, uint8_t after) noexcept nogil:
    """Keep flagged_sources and flagged_by in step with one entry's pattern bits."""
    cdef int bit
    if (before == 0) != (after == 0):
        self.flagged_sources += 1 if before == 0 else -1
    for bit in range(8):
        if (before ^ after) & (1 << bit):
            self.flagged_by[bit] += 1 if after & (1 << bit) else -1


cdef Header* table_insert(Table* self, uint64_t hi, uint64_t lo, uint64_t h, double now,
                          uint64_t seed) noexcept nogil:
    """Add a zeroed entry for a new key; NULL (an overflow) when there is no room."""
    cdef uint32_t slot, pos
    cdef Header* e
    if self.n >= self.capacity and not table_evict_one(self, seed):
        self.overflows += 1
        return NULL
    if self.n >= self.allocated and not table_grow(self, seed):
        self.overflows += 1
        return NULL
    pos = self.n
    self.n += 1
    e = table_at(self, pos)
    memset(e, 0, self.esize)
    e.key_hi = hi
    e.key_lo = lo
    e.stamp = now
    slot = home_slot(self, h)
    while self.index[slot] != 0:
        slot = (slot + 1) & self.index_mask
    self.index[slot] = table_tag(self, h) | (pos + 1)
    return e


cdef Record* pool_take(Table* self, Header* e, double now, uint64_t seed) noexcept nogil:
    """Give entry ``e`` a fresh pattern-state record; NULL when the pool has none to spare.

    A full pool recycles the sampled record whose owner has no pattern
    raised and was updated longest ago; when every sample is flagged the
    request is refused and counted in pool_full.
    """
    cdef uint32_t number = 0, i, _sample
    cdef Record* r
    cdef Header* owner
    if self.pool == NULL:
        self.pool = <Record*>calloc(self.pool_capacity, sizeof(Record))
        self.pool_free = <uint16_t*>calloc(self.pool_capacity, sizeof(uint16_t))
        if self.pool == NULL or self.pool_free == NULL:
            free(self.pool)
            free(self.pool_free)
            self.pool = NULL
            self.pool_free = NULL
            self.pool_full += 1
            return NULL
    if self.pool_nfree:
        self.pool_nfree -= 1
        number = self.pool_free[self.pool_nfree]
    elif self.pool_len < self.pool_capacity:
        self.pool_len += 1
        number = self.pool_len
    else:
        for _sample in range(_SAMPLES):
            i = <uint32_t>(table_next_random(self) % self.pool_capacity)
            r = &self.pool[i]
            if r.patterns == 0 and (number == 0 or r.stamp < self.pool[number - 1].stamp):
                number = i + 1
        if number == 0:
            self.pool_full += 1
            return NULL
        r = &self.pool[number - 1]
        owner = table_find(self, r.key_hi, r.key_lo, key_hash(r.key_hi, r.key_lo, seed))
        owner.rare = 0
        self.pool_used -= 1
    self.pool_used += 1
    r = &self.pool[number - 1]
    memset(r, 0, sizeof(Record))
    r.key_hi = e.key_hi
    r.key_lo = e.key_lo
    r.stamp = now
    r.roll_at = now               # no bucket end known yet: the first roll computes it
    e.rare = <uint16_t>number
    return r


cdef void pool_mark(Table* self, uint16_t number, uint8_t patterns) noexcept nogil:
    """Mirror the owner's pattern bits in record ``number``; keep the flagged list.

    The flagged list links exactly the records whose owner has a pattern
    raised, so findings read those and nothing else.
    """
    cdef Record* r = &self.pool[number - 1]
    if (r.patterns == 0) != (patterns == 0):
        if patterns:                             # link at the head
            r.flag_prev = 0
            r.flag_next = self.pool_flagged
            if self.pool_flagged:
                self.pool[self.pool_flagged - 1].flag_prev = number
            self.pool_flagged = number
        else:                                    # unlink
            if r.flag_prev:
                self.pool[r.flag_prev - 1].flag_next = r.flag_next
            else:
                self.pool_flagged = r.flag_next
            if r.flag_next:
                self.pool[r.flag_next - 1].flag_prev = r.flag_prev
            r.flag_prev = r.flag_next = 0
    r.patterns = patterns


cdef void pool_release(Table* self, uint16_t number) noexcept nogil:
    pool_mark(self, number, 0)
    self.pool_free[self.pool_nfree] = number
    self.pool_nfree += 1
    self.pool_used -= 1


cdef bint table_copy(Table* self, uint64_t hi, uint64_t lo, uint64_t h, void* out) noexcept nogil:
    """Copy the entry for a key into ``out``; False when there is none."""
    cdef Header* e = table_find(self, hi, lo, h)
    if e == NULL:
        return False
    memcpy(out, e, self.esize)
    return True


cdef bint table_delete(Table* self, uint64_t hi, uint64_t lo, uint64_t h, uint64_t seed) noexcept nogil:
    """Remove a key's entry; False when there is none."""
    cdef Header* e = table_find(self, hi, lo, h)
    if e == NULL:
        return False
    table_remove(self, <uint32_t>((<char*>e - self.entries) // self.esize), seed)
    return True


cdef void table_open_untracked(Table* self, uint64_t hi, uint64_t lo) noexcept nogil:
    """Remember a connection counted open without an entry (see Table.untracked)."""
    cdef int i, free_slot = -1
    if self.untracked == NULL:
        self.untracked = <Untracked*>calloc(_UNTRACKED_SLOTS, sizeof(Untracked))
        if self.untracked == NULL:
            self.untracked_lost += 1
            return
    for i in range(_UNTRACKED_SLOTS):
        if self.untracked[i].count == 0:
            if free_slot < 0:
                free_slot = i
        elif self.untracked[i].key_hi == hi and self.untracked[i].key_lo == lo:
            self.untracked[i].count += 1
            return
    if free_slot < 0:
        self.untracked_lost += 1
        return
    self.untracked[free_slot].key_hi = hi
    self.untracked[free_slot].key_lo = lo
    self.untracked[free_slot].count = 1
    self.untracked_n += 1


cdef bint table_close_untracked(Table* self, uint64_t hi, uint64_t lo) noexcept nogil:
    """Absorb the close of an untracked connection; False when the key has none."""
    cdef int i
    for i in range(_UNTRACKED_SLOTS):
        if (self.untracked[i].count and self.untracked[i].key_hi == hi
                and self.untracked[i].key_lo == lo):
            self.untracked[i].count -= 1
            if self.untracked[i].count == 0:
                self.untracked_n -= 1
            return True
    return False


cdef int table_check(Table* self, uint64_t seed) noexcept nogil:
    """Return BROKEN_NONE when one shard's invariants hold, else the first broken one.

    The index and the entries are a bijection when every slot in use points
    below n, exactly n slots are in use, and every entry is found by probing
    from its home slot: n entries each reached by a slot, out of n slots in
    use, leaves no slot pointing at two entries. The slot that reaches an
    entry must carry the entry's tag too, or table_find would pass it by.
    """
    cdef uint32_t slot, pos, used = 0, bit, want
    cdef uint64_t h
    cdef uint32_t sources = 0, flagged = 0
    cdef uint32_t by_bit[8]
    cdef int64_t connections = 0
    cdef Header* e
    if self.n > self.capacity or self.n > self.allocated:
        return BROKEN_OVER_CAPACITY
    if self.index == NULL:
        return BROKEN_NONE if self.n == 0 else BROKEN_INDEX
    for slot in range(self.index_mask + 1):
        if self.index[slot] != 0:
            if self.index[slot] & self.pos_mask == 0 or slot_pos(self, self.index[slot]) >= self.n:
                return BROKEN_INDEX
            used += 1
    if used != self.n:
        return BROKEN_INDEX
    memset(by_bit, 0, sizeof(by_bit))
    for pos in range(self.n):
        e = table_at(self, pos)
        h = key_hash(e.key_hi, e.key_lo, seed)
        slot = home_slot(self, h)
        want = table_tag(self, h) | (pos + 1)
        while self.index[slot] != want:
            if self.index[slot] == 0:
                return BROKEN_INDEX
            slot = (slot + 1) & self.index_mask
        sources += e.active > 0
        connections += e.active
        flagged += e.patterns != 0
        for bit in range(8):
            by_bit[bit] += (e.patterns >> bit) & 1
    if sources != self.active_sources:
        return BROKEN_ACTIVE_SOURCES
    if connections != self.active_connections:
        return BROKEN_ACTIVE_CONNECTIONS
    if flagged != self.flagged_sources:
        return BROKEN_FLAGGED_SOURCES
    for bit in range(8):
        if by_bit[bit] != self.flagged_by[bit]:
            return BROKEN_FLAGGED_BY
    used = 0
    if self.untracked != NULL:
        for slot in range(_UNTRACKED_SLOTS):
            used += self.untracked[slot].count != 0
    if used != self.untracked_n:
        return BROKEN_UNTRACKED
    return _pool_check(self)


cdef int _pool_check(Table* self) noexcept nogil:
    """The records in use and the entries that own them are a bijection that
    mirrors each owner's key and pattern bits; the rest are on the free stack."""
    cdef uint32_t pos, owners = 0, k, listed = 0, flagged = 0
    cdef uint16_t number, prev = 0
    cdef Header* e
    cdef Record* r
    for pos in range(self.n):
        e = table_at(self, pos)
        if e.rare == 0:
            continue
        owners += 1
        if e.rare > self.pool_len or self.pool == NULL:
            return BROKEN_PATTERN_STATE
        r = &self.pool[e.rare - 1]
        if r.key_hi != e.key_hi or r.key_lo != e.key_lo or r.patterns != e.patterns:
            return BROKEN_PATTERN_STATE
        for k in range(self.pool_nfree):
            if self.pool_free[k] == e.rare:
                return BROKEN_PATTERN_STATE
    if (owners != self.pool_used or self.pool_len > self.pool_capacity
            or owners + self.pool_nfree != self.pool_len):
        return BROKEN_PATTERN_STATE
    # The flagged list holds exactly the records whose owner is flagged.
    number = self.pool_flagged
    while number:
        if number > self.pool_len or listed > self.pool_len:
            return BROKEN_PATTERN_STATE
        r = &self.pool[number - 1]
        if r.patterns == 0 or r.flag_prev != prev:
            return BROKEN_PATTERN_STATE
        listed += 1
        prev = number
        number = r.flag_next
    for pos in range(self.n):
        e = table_at(self, pos)
        flagged += e.rare != 0 and e.patterns != 0
    return BROKEN_NONE if listed == flagged else BROKEN_PATTERN_STATE


cdef uint64_t _prefix_mask(int bits) noexcept:
    """Mask of the top ``bits`` bits of a 64-bit word (clamped to 0..64)."""
    if bits <= 0:
        return 0
    if bits >= 64:
        return 0xFFFFFFFFFFFFFFFFULL
    return ~((<uint64_t>1 << (64 - bits)) - 1)


cdef uint64_t table_bytes(Table* self) noexcept nogil:
    """Bytes held by one table's entry array, index and pattern-state pool."""
    cdef uint64_t total = 0
    if self.pool != NULL:
        total = <uint64_t>self.pool_capacity * (sizeof(Record) + sizeof(uint16_t))
    if self.index == NULL:
        return total
    return total + <uint64_t>self.allocated * self.esize + (self.index_mask + 1) * sizeof(uint32_t)


cdef void _add_counters(Table* s, int64_t* sums) noexcept nogil:
    sums[0] += s.active_connections
    sums[1] += s.active_sources
    sums[2] += s.n
    sums[3] += s.flagged_sources
    sums[4] += <int64_t>s.evictions
    sums[5] += <int64_t>s.overflows


cdef class ShardedTable:
    """Sharded, bounded tables of one entry type, keyed by netblock or text.

    Shared by SourceTable, BanTable and BucketTable: the shards and their
    locks, the clock, source-address keys, and the aggregate counters.
    """

    # Written once in _setup, read-only afterwards (no lock needed); the
    # contents of _tables[i] are guarded by _shards[i].lock.
    cdef tuple _shards        # Shard objects: the locks
    cdef Table* _tables       # one per shard, in C memory: no refcounting on the hot path
    cdef uint64_t _shard_mask
    cdef uint64_t _seed
    cdef uint64_t _mask_hi
    cdef uint64_t _mask_lo
    cdef uint32_t _mask_v4
    cdef object _clock

    cdef int _setup(self, uint64_t capacity, uint32_t shards, uint32_t esize, int ipv4_prefix,
                    int ipv6_prefix, object clock, uint64_t seed) except -1:
        cdef uint32_t i, cap, above
        if self._shards is not None:
            raise RuntimeError(f"{type(self).__name__} is already initialised")
        if not sizeof(Header) <= esize <= 128:
            raise ValueError(f"entries of {esize} bytes: table_find reaches at most 128")
        if shards == 0 or shards & (shards - 1) or capacity < shards:
            raise ValueError("shards must be a power of two no larger than capacity")
        self._seed = seed
        self._mask_v4 = 0 if ipv4_prefix <= 0 else (~<uint32_t>0) << (32 - min(ipv4_prefix, 32))
        self._mask_hi = _prefix_mask(ipv6_prefix)
        self._mask_lo = _prefix_mask(ipv6_prefix - 64)
        self._clock = clock
        self._tables = <Table*>calloc(shards, sizeof(Table))
        if self._tables == NULL:
            raise MemoryError()
        for i in range(shards):
            # Spread the remainder so the shard capacities sum to capacity.
            cap = <uint32_t>(capacity // shards + (1 if i < capacity % shards else 0))
            self._tables[i].capacity = cap
            # The tag: the slot bits above every position + 1 (1..cap), none from 2**31 on.
            above = 1
            while above <= cap and above < 0x80000000:
                above <<= 1
            self._tables[i].tag_mask = 0 if above <= cap else ~(above - 1)
            self._tables[i].pos_mask = ~self._tables[i].tag_mask
            self._tables[i].rng = fmix64(seed + i + 1) | 1
            self._tables[i].esize = esize
        self._shard_mask = shards - 1
        self._shards = tuple([Shard() for _ in range(shards)])
        return 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._tables != NULL:
            for i in range(self._shard_mask + 1):
                free(self._tables[i].entries)
                free(self._tables[i].index)
                free(self._tables[i].untracked)
                free(self._tables[i].pool)
                free(self._tables[i].pool_free)
            free(self._tables)

    cdef inline double _now(self, object now) except? -1.0:
        # The default clock inline, the rest out of line: small enough that
        # the compiler inlines it into every caller.
        if now is None and self._clock is None:
            return cg_monotonic()
        return self._given_now(now)

    cdef double _given_now(self, object now) except? -1.0:
        cdef double t
        cdef bint from_clock = now is None
        if from_clock:
            now = self._clock()
        if type(now) is float:
            t = now
            if -_MAX_TIME <= t <= _MAX_TIME:            # false for nan
                return t
        # Everything else through the twin's own rule: one check, one message.
        return _seconds_of(now, from_clock)

    cdef inline int _key(self, object source, uint64_t* hi, uint64_t* lo) except 0:
        return netblock_mask(self, source_key(source, hi, lo), hi, lo)

    def source_key(self, source):
        """Return ``(family, hi, lo)``: the masked netblock key of a source."""
        cdef uint64_t hi, lo
        family = self._key(source, &hi, &lo)
        return family, hi, lo

    cdef bint _copy_entry(self, uint64_t hi, uint64_t lo, void* out) noexcept:
        """Copy a key's entry into ``out`` under its shard's lock; False when absent."""
        cdef uint64_t h = key_hash(hi, lo, self._seed)
        cdef Py_ssize_t i = h & self._shard_mask
        cdef bint found
        shard_lock(self, i)
        found = table_copy(&self._tables[i], hi, lo, h, out)
        shard_unlock(self, i)
        return found

    def counters(self):
        """Return (active_connections, active_sources, tracked_sources,
        flagged_sources, evictions, overflows), summed over the shards."""
        cdef int64_t sums[6]
        cdef Py_ssize_t i
        memset(sums, 0, sizeof(sums))
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            _add_counters(&self._tables[i], sums)
            shard_unlock(self, i)
        return tuple([sums[i] for i in range(6)])

    def flagged_by(self):
        """Return how many entries have each pattern bit set (Pattern bit order)."""
        cdef int64_t sums[8]
        cdef Py_ssize_t i
        cdef int bit
        memset(sums, 0, sizeof(sums))
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            for bit in range(8):
                sums[bit] += self._tables[i].flagged_by[bit]
            shard_unlock(self, i)
        return tuple([sums[bit] for bit in range(len(_spec.PATTERNS))])

    def untracked(self):
        """Return (connections open untracked, untracked opens whose close cannot be
        told apart), summed over the shards."""
        cdef uint64_t open_count = 0, lost = 0
        cdef Py_ssize_t i
        cdef int slot
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            if self._tables[i].untracked != NULL:
                for slot in range(_UNTRACKED_SLOTS):
                    open_count += self._tables[i].untracked[slot].count
            lost += self._tables[i].untracked_lost
            shard_unlock(self, i)
        return open_count, lost

    def check_consistency(self):
        """Raise AssertionError naming the first broken invariant of any shard.

        Checked per shard, under its lock: the index and the entries are a
        bijection, there are no more entries than capacity, and the
        active_sources, active_connections, flagged_sources and flagged_by
        counters match the entries. For tests and debugging: O(entries).
        """
        cdef Py_ssize_t i
        cdef int broken
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            broken = table_check(&self._tables[i], self._seed)
            shard_unlock(self, i)
            if broken:
                raise AssertionError(f"shard {i}: {_spec.Broken(broken).describe()}")

    def memory_bytes(self):
        """Return the bytes this table holds: C tables and shard objects."""
        cdef uint64_t total = (self._shard_mask + 1) * sizeof(Table)
        cdef Py_ssize_t i
        for i in range(self._shard_mask + 1):
            shard_lock(self, i)
            total += table_bytes(&self._tables[i])
            shard_unlock(self, i)
            total += self._shards[i].__sizeof__()
        return total

    @property
    def capacity(self):
        """The hard bound on entries."""
        cdef uint64_t total = 0
        cdef Py_ssize_t i
        for i in range(self._shard_mask + 1):
            total += self._tables[i].capacity   # written once in _setup
        return total

    @property
    def shards(self):
        return len(self._shards)

    @property
    def clock(self):
        """The clock given when built; None for the default (monotonic) clock."""
        return self._clock


cdef inline void shard_lock(ShardedTable table, Py_ssize_t i) noexcept:
    """Take shard ``i``'s lock: a real lock on free-threaded builds only.

    With the GIL, nothing between shard_lock and shard_unlock can release
    it (only plain C runs there), so the GIL already serialises the region
    and both calls compile to nothing.
    """
    if CG_SHARD_LOCKS:
        (<Shard>PyTuple_GET_ITEM(table._shards, i)).lock.acquire()


cdef inline void shard_unlock(ShardedTable table, Py_ssize_t i) noexcept:
    """Release shard ``i``'s lock, taken by shard_lock."""
    if CG_SHARD_LOCKS:
        (<Shard>PyTuple_GET_ITEM(table._shards, i)).lock.release()


cdef inline int netblock_mask(ShardedTable table, int family, uint64_t* hi, uint64_t* lo) noexcept:
    """Mask a parsed address to ``table``'s netblock; return the family."""
    if family == 4:
        lo[0] = _V4_TAG | (lo[0] & table._mask_v4)
    else:
        hi[0] &= table._mask_hi
        lo[0] &= table._mask_lo
    return family
