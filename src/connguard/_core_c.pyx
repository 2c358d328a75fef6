# cython: language_level=3, freethreading_compatible=True
"""Compiled core: address parsing, sharded tables of sources, bans and buckets, the guard.

One translation unit from paired units: each ``_pxi/NAME.pxi`` included below
pairs with ``_core_py/NAME.py``, the pure-Python twin, which mirrors it
function for function; a change to one is a change to the other. The
contract both share (codes, layouts, constants) is ``connguard._spec``;
``_pxi/spec.pxi`` checks at import that the C side agrees with it.

Locking, beside the data it guards:

* ``SourceTable._tables[i]`` -- one shard's entry array, index and counters --
  is guarded by ``SourceTable._shards[i].lock``.
* ``SourceTable`` configuration is written once in ``__init__`` and only read
  afterwards, so it needs no lock.
* Under a shard lock only plain C runs: no Python call, no allocation of a
  Python object, nothing that can raise. Parsing, the clock and argument
  conversion all happen before the lock is taken.
* On GIL builds the locked region cannot release the GIL (it never calls
  into Python), so the GIL already serialises it and the shard lock compiles
  away (``CG_SHARD_LOCKS`` is 0). On free-threaded builds it is a real lock.
  ``shard_lock``/``shard_unlock`` (table.pxi) are the only places that know.
"""

import threading as _threading

from ._validate import seconds_of as _seconds_of

cimport cython
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from cpython.long cimport PyLong_Check
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.math cimport INFINITY, floor, isfinite, nextafter
from libc.stdint cimport int8_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcpy, memset

cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define CG_SHARD_LOCKS 1
    #else
    #define CG_SHARD_LOCKS 0
    #endif

    /* Little-endian 64-bit load from any address. memcpy is how C spells an
       unaligned, alias-safe load; compilers turn it into one instruction. */
    static CYTHON_INLINE uint64_t cg_load_le64(const unsigned char *p) {
        uint64_t w;
        memcpy(&w, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
    #endif
        return w;
    }

    /* A counter that threads may bump at once: relaxed atomics on
       free-threaded builds; under the GIL a plain increment is already safe. */
    #if defined(Py_GIL_DISABLED) && defined(_MSC_VER)
    #include <intrin.h>
    #define CG_COUNT(p) ((void)_InterlockedIncrement64((volatile long long *)(p)))
    #elif defined(Py_GIL_DISABLED)
    #define CG_COUNT(p) ((void)__atomic_fetch_add((p), 1, __ATOMIC_RELAXED))
    #else
    #define CG_COUNT(p) ((void)(++*(p)))
    #endif

    /* Start loading a cache line the caller will read soon, so that the miss
       overlaps other work. A prefetch never faults, whatever the address;
       without GCC or Clang it is nothing. The empty volatile asm is there
       because GCC sees no side effect in a prefetch: a function that only
       prefetches is found "const", and its calls are dropped as useless
       (measured: a batch helper lost every prefetch that way). */
    #if defined(__GNUC__) || defined(__clang__)
    #define CG_PREFETCH(p) do { __builtin_prefetch(p); __asm__ __volatile__(""); } while (0)
    #else
    #define CG_PREFETCH(p) ((void)0)
    #endif

    /* Where a thread bumps the Guard's verdict counters: on free-threaded
       builds each thread picks one of 16 stripes by its id (hashed: ids are
       thread-local storage addresses, alike in their low bits), so threads
       on different cores seldom write the same cache line; under the GIL one
       stripe. A stripe is 24 counters (192 bytes) of which at most 16 are
       used, so two stripes' used counters are more than a cache line apart
       wherever the object starts; CG_COUNT_PAD counters before the first
       stripe keep it off the line of the Guard's read-mostly fields. */
    #ifdef Py_GIL_DISABLED
    #define CG_COUNT_STRIPES 16
    #define CG_COUNT_PAD 8
    #define CG_COUNT_STRIPE() ((Py_ssize_t)(((uint64_t)_Py_ThreadId() * 0x9E3779B97F4A7C15ULL) >> 60))
    #if defined(_MSC_VER)
    #define CG_LOAD(p) ((int64_t)_InterlockedOr64((volatile long long *)(p), 0))
    #else
    #define CG_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    #endif
    #else
    #define CG_COUNT_STRIPES 1
    #define CG_COUNT_PAD 0
    #define CG_COUNT_STRIPE() 0
    #define CG_LOAD(p) (*(p))
    #endif
    #define CG_STRIPE_WORDS 24

    /* Clear a flag and return what it held, as one step for every thread:
       an atomic exchange on free-threaded builds; under the GIL nothing runs
       between the read and the write. */
    static CYTHON_INLINE int cg_take(int *flag) {
    #if defined(Py_GIL_DISABLED) && defined(_MSC_VER)
        return (int)_InterlockedExchange((volatile long *)flag, 0);
    #elif defined(Py_GIL_DISABLED)
        return __atomic_exchange_n(flag, 0, __ATOMIC_ACQ_REL);
    #else
        int held = *flag;
        *flag = 0;
        return held;
    #endif
    }

    /* The default clock, read without making a float. On Linux it is the
       coarse monotonic clock: same epoch as time.monotonic(), a resolution
       of a kernel tick (1-4 ms, ample for windows of seconds), and several
       times cheaper to read, which matters twice per connection. Elsewhere
       it is time.monotonic()'s clock. _core_py.default_clock is the same. */
    #if defined(__linux__)
    #include <time.h>
    #endif
    static CYTHON_INLINE double cg_monotonic(void) {
    #if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        /* A product, not a quotient: a division here costs more than the
           rest of the read, and CPython's time.clock_gettime() computes the
           same product, so the pure core's clock reads the same value.
           Still monotonic: for a fixed tv_sec the rounded product never
           decreases as tv_nsec grows and stays below 1.0, so the rounded
           sum never passes the next second's. */
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    #elif PY_VERSION_HEX >= 0x030D0000
        PyTime_t t = 0;
        (void)PyTime_MonotonicRaw(&t);
        return (double)t / 1e9;
    #else
        return (double)_PyTime_GetMonotonicClock() / 1e9;
    #endif
    }
    """
    const bint CG_SHARD_LOCKS
    double cg_monotonic() noexcept nogil
    void CG_COUNT(int64_t* counter) noexcept nogil
    void CG_PREFETCH(const void* p) noexcept nogil
    enum: CG_COUNT_STRIPES
    enum: CG_COUNT_PAD
    enum: CG_STRIPE_WORDS
    int64_t CG_LOAD(const int64_t* counter) noexcept nogil
    Py_ssize_t CG_COUNT_STRIPE() noexcept nogil
    int cg_take(int* flag) noexcept nogil
    uint64_t cg_load_le64(const uint8_t* p) noexcept nogil

cdef extern from "Python.h":
    enum: PyUnicode_1BYTE_KIND
    bint PyUnicode_Check(object) noexcept
    bint PyUnicode_IS_ASCII(object) noexcept
    void* PyUnicode_DATA(object) noexcept
    int PyUnicode_KIND(object) noexcept
    Py_ssize_t PyUnicode_GET_LENGTH(object) noexcept
    uint32_t PyUnicode_READ(int kind, void* data, Py_ssize_t i) noexcept nogil  # a code point as a number


include "_pxi/spec.pxi"
include "_pxi/parse.pxi"
include "_pxi/destinations.pxi"
include "_pxi/patterns.pxi"
include "_pxi/table.pxi"
include "_pxi/replay.pxi"
include "_pxi/sources.pxi"
include "_pxi/bans.pxi"
include "_pxi/limits.pxi"
include "_pxi/guard.pxi"
include "_pxi/entries.pxi"
