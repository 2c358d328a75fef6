# Batch replay of flows in event-time order (pairs with _core_py/replay.py).
#
# A flow is accepted at its start and closed at start + duration. Flows are
# pushed in any order; pending accepts wait in a heap keyed (start, push
# number), pending closes in one keyed (end, push number), so events play in
# time order, an accept before a close at the same instant, and ties in push
# order. Every played event moves the replay clock forward; a flow pushed
# with a start before the clock arrived too late to be put in order: it is
# counted late and played at the clock (its close at no earlier than that).
# SourceTable.replay (sources.pxi) plays the events.

cdef str _BAD_START = "start is not a finite time"
cdef str _BAD_DURATION = "duration is not a number >= 0"
cdef str _BAD_SOURCE = "source is not an address"
cdef str _BAD_DESTINATION = "destination is not a string"
cdef str _BAD_SENT = "sent is not a byte count"
cdef str _BAD_RECEIVED = "received is not a byte count"


cdef struct Flow:
    double end
    uint64_t hi
    uint64_t lo
    Destination d
    int64_t sent                 # -1: unknown
    int64_t received             # -1: unknown
    PyObject* source             # strong references, dropped when the flow is released
    PyObject* destination


cdef struct Due:
    double t
    uint64_t seq                 # push order: breaks ties in time
    Py_ssize_t slot              # the flow, in _Replay.flows


cdef struct Heap:
    Due* items
    Py_ssize_t n
    Py_ssize_t cap


cdef inline bint _earlier(const Due* a, const Due* b) noexcept nogil:
    return a.t < b.t or (a.t == b.t and a.seq < b.seq)


cdef int heap_push(Heap* h, Due item) except -1:
    cdef Py_ssize_t i, parent
    cdef Due* grown
    if h.n == h.cap:
        grown = <Due*>realloc(h.items, max(2 * h.cap, 64) * sizeof(Due))
        if grown == NULL:
            raise MemoryError()
        h.items = grown
        h.cap = max(2 * h.cap, 64)
    i = h.n
    h.n += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not _earlier(&item, &h.items[parent]):
            break
        h.items[i] = h.items[parent]
        i = parent
    h.items[i] = item
    return 0


cdef Due heap_pop(Heap* h) noexcept nogil:
    """Remove and return the earliest item (the heap is not empty)."""
    cdef Due top = h.items[0]
    cdef Due last
    cdef Py_ssize_t i = 0, child
    h.n -= 1
    last = h.items[h.n]
    while True:
        child = 2 * i + 1
        if child >= h.n:
            break
        if child + 1 < h.n and _earlier(&h.items[child + 1], &h.items[child]):
            child += 1
        if not _earlier(&h.items[child], &last):
            break
        h.items[i] = h.items[child]
        i = child
    if h.n:
        h.items[i] = last
    return top


cdef bint _replay_seconds(object value, double low, double* out):
    """A finite number in [low, _MAX_TIME] (an int or a float) into out; False when not."""
    cdef double t
    if type(value) is float:
        t = value
    elif type(value) is int:
        try:
            t = value
        except OverflowError:
            return False
    else:
        return False
    if not low <= t <= _MAX_TIME:                   # also false for nan
        return False
    out[0] = t
    return True


cdef bint _replay_count(object value, int64_t* out):
    """-1 for None (unknown), else a byte count clamped to 2**63 - 1; False when invalid."""
    if value is None:
        out[0] = -1
        return True
    if type(value) is not int or value < 0:
        return False
    out[0] = 0x7FFFFFFFFFFFFFFF if value > 0x7FFFFFFFFFFFFFFF else <int64_t>value
    return True


cdef class _Replay:
    """The pending flows of one SourceTable's replay, and its clock.

    Important: one replay call at a time per table (a second, concurrent or
    from inside a finding hook, raises RuntimeError); the table's ordinary
    accept and close stay usable meanwhile, at their own times.
    """

    # All guarded by busy: only the replay call holding it touches them.
    cdef Heap accepts
    cdef Heap closes
    cdef Flow* flows
    cdef Py_ssize_t flows_cap
    cdef Py_ssize_t used           # slots handed out so far
    cdef Py_ssize_t* free_slots
    cdef Py_ssize_t n_free
    cdef uint64_t seq
    cdef double clock
    cdef readonly object busy

    def __cinit__(self):
        self.clock = -INFINITY
        self.busy = _threading.Lock()

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.accepts.n):
            Py_XDECREF(self.flows[self.accepts.items[i].slot].source)
            Py_XDECREF(self.flows[self.accepts.items[i].slot].destination)
        for i in range(self.closes.n):
            Py_XDECREF(self.flows[self.closes.items[i].slot].source)
            Py_XDECREF(self.flows[self.closes.items[i].slot].destination)
        free(self.accepts.items)
        free(self.closes.items)
        free(self.flows)
        free(self.free_slots)

    cdef Py_ssize_t take_slot(self) except -1:
        cdef Flow* flows
        cdef Py_ssize_t* free_slots
        cdef Py_ssize_t cap
        if self.n_free:
            self.n_free -= 1
            return self.free_slots[self.n_free]
        if self.used == self.flows_cap:
            cap = max(2 * self.flows_cap, 64)
            flows = <Flow*>realloc(self.flows, cap * sizeof(Flow))
            if flows == NULL:
                raise MemoryError()
            self.flows = flows
            free_slots = <Py_ssize_t*>realloc(self.free_slots, cap * sizeof(Py_ssize_t))
            if free_slots == NULL:
                raise MemoryError()
            self.free_slots = free_slots
            self.flows_cap = cap
        self.used += 1
        return self.used - 1

    cdef object release(self, Py_ssize_t slot):
        """Free a flow's slot; return its source (the reference the slot held)."""
        cdef PyObject* source = self.flows[slot].source
        Py_XDECREF(self.flows[slot].destination)
        self.flows[slot].source = self.flows[slot].destination = NULL
        self.free_slots[self.n_free] = slot
        self.n_free += 1
        result = <object>source
        Py_XDECREF(source)
        return result

    cdef tuple push(self, ShardedTable table, const Classes* classes, starts, durations,
                    sources, destinations, sent, received):
        """Add a batch of flows; return (late, skipped as (index, reason))."""
        cdef Py_ssize_t i, n = len(starts), slot
        cdef double start, duration, end
        cdef uint64_t hi, lo
        cdef int64_t n_sent, n_received
        cdef Destination d
        cdef Due due
        cdef Py_ssize_t late = 0
        for name, column in (("durations", durations), ("sources", sources),
                             ("destinations", destinations), ("sent", sent),
                             ("received", received)):
            if column is not None and len(column) != n:
                raise ValueError(f"{name} has {len(column)} items, starts has {n}")
        skipped = []
        for i in range(n):
            if not _replay_seconds(starts[i], -_MAX_TIME, &start):
                skipped.append((i, _BAD_START))
                continue
            value = durations[i]
            if value is None:
                duration = 0.0
            elif not _replay_seconds(value, 0.0, &duration):
                skipped.append((i, _BAD_DURATION))
                continue
            source = sources[i]
            try:
                table._key(source, &hi, &lo)
            except (TypeError, ValueError):
                skipped.append((i, _BAD_SOURCE))
                continue
            destination = destinations[i]
            if not isinstance(destination, str):
                skipped.append((i, _BAD_DESTINATION))
                continue
            n_sent = -1
            if sent is not None and not _replay_count(sent[i], &n_sent):
                skipped.append((i, _BAD_SENT))
                continue
            n_received = -1
            if received is not None and not _replay_count(received[i], &n_received):
                skipped.append((i, _BAD_RECEIVED))
                continue
            end = start + duration
            if start < self.clock:
                late += 1
                start = self.clock
                end = max(end, start)
            classify(destination, classes, &d)
            slot = self.take_slot()
            self.flows[slot] = Flow(end=end, hi=hi, lo=lo, d=d, sent=n_sent,
                                    received=n_received, source=<PyObject*>source,
                                    destination=<PyObject*>destination)
            Py_INCREF(source)
            Py_INCREF(destination)
            due = Due(t=start, seq=self.seq, slot=slot)
            self.seq += 1
            try:
                heap_push(&self.accepts, due)
            except MemoryError:
                self.release(slot)
                raise
        return late, skipped
