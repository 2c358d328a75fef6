# Hand-written entry points for the methods called once per connection. No
# twin: the pure core's methods are plain Python calls already.
#
# Cython's wrapper for a ``def`` method binds every call's arguments the
# general way: it builds the array of parameter names, takes a reference to
# each argument and drops it again, whether or not a keyword was passed
# (about 50 instructions a call, a tenth of an accept). Nearly every call
# passes its arguments by position, so the method descriptor in the class
# dictionary is replaced at import by one whose function takes positional
# calls straight to the method's body and hands every other call (keywords,
# too few or too many arguments) to Cython's own wrapper unchanged: one
# binding of arguments, one set of error messages.

cdef extern from "Python.h":
    ctypedef struct PyMethodDef:
        const char* ml_name
        void* ml_meth
        int ml_flags
        const char* ml_doc
    ctypedef struct PyMethodDescrObject:
        PyMethodDef* d_method
    ctypedef struct PyTypeObject:
        PyObject* tp_dict
    object PyDescr_NewMethod(type cls, PyMethodDef* method)
    void PyType_Modified(type cls)
    enum: METH_FASTCALL
    enum: METH_KEYWORDS

# A METH_FASTCALL | METH_KEYWORDS function: Cython's wrapper, called with the
# arguments exactly as the entry received them.
ctypedef object (*_Wrapper)(object, PyObject**, Py_ssize_t, PyObject*)

cdef enum:
    _TRACKER_ACCEPT
    _TRACKER_OPEN
    _TRACKER_CLOSE
    _GUARD_ACCEPT
    _GUARD_OPEN
    _GUARD_CLOSE
    _CONNECTION_CLOSE
    _ENTRIES

cdef PyMethodDef _entry_defs[_ENTRIES]
cdef _Wrapper _wrappers[_ENTRIES]
_METHOD_DESCRIPTOR = type(str.join)


cdef inline object _arg(PyObject** args, Py_ssize_t nargs, Py_ssize_t i, object default):
    """Positional argument ``i``, or ``default`` when the call passed fewer."""
    return <object>args[i] if i < nargs else default


# Each entry: the method's signature, then the positional calls it takes
# itself (none with keywords).

cdef object _tracker_accept_entry(object self, PyObject** args, Py_ssize_t nargs,
                                  PyObject* kwnames):
    """SourceTable.accept(source, destination="", now=None): 1 to 3."""
    if kwnames != NULL or not 1 <= nargs <= 3:
        return _wrappers[_TRACKER_ACCEPT](self, args, nargs, kwnames)
    return source_accept(<SourceTable>self, <object>args[0], _arg(args, nargs, 1, ""),
                         _arg(args, nargs, 2, None))


cdef object _tracker_open_entry(object self, PyObject** args, Py_ssize_t nargs,
                                PyObject* kwnames):
    """SourceTable.open(source, destination="", now=None): 1 to 3."""
    if kwnames != NULL or not 1 <= nargs <= 3:
        return _wrappers[_TRACKER_OPEN](self, args, nargs, kwnames)
    return source_open(<SourceTable>self, <object>args[0], _arg(args, nargs, 1, ""),
                       _arg(args, nargs, 2, None))


cdef object _tracker_close_entry(object self, PyObject** args, Py_ssize_t nargs,
                                 PyObject* kwnames):
    """SourceTable.close(source, now=None, *, sent=None, received=None,
    destination=None): 1 or 2."""
    if kwnames != NULL or not 1 <= nargs <= 2:
        return _wrappers[_TRACKER_CLOSE](self, args, nargs, kwnames)
    return source_close(<SourceTable>self, <object>args[0], _arg(args, nargs, 1, None),
                        None, None, None)


cdef object _guard_accept_entry(object self, PyObject** args, Py_ssize_t nargs,
                                PyObject* kwnames):
    """GuardTable.accept(source, destination="", now=None): 1 to 3."""
    if kwnames != NULL or not 1 <= nargs <= 3:
        return _wrappers[_GUARD_ACCEPT](self, args, nargs, kwnames)
    return guard_accept(<GuardTable>self, <object>args[0], _arg(args, nargs, 1, ""),
                        _arg(args, nargs, 2, None))


cdef object _guard_open_entry(object self, PyObject** args, Py_ssize_t nargs,
                              PyObject* kwnames):
    """GuardTable.open(source, destination="", now=None): 1 to 3."""
    if kwnames != NULL or not 1 <= nargs <= 3:
        return _wrappers[_GUARD_OPEN](self, args, nargs, kwnames)
    return guard_open(<GuardTable>self, <object>args[0], _arg(args, nargs, 1, ""),
                      _arg(args, nargs, 2, None))


cdef object _guard_close_entry(object self, PyObject** args, Py_ssize_t nargs,
                               PyObject* kwnames):
    """GuardTable.close(source, now=None, *, sent=None, received=None,
    destination=None): 1 or 2."""
    if kwnames != NULL or not 1 <= nargs <= 2:
        return _wrappers[_GUARD_CLOSE](self, args, nargs, kwnames)
    return guard_close(<GuardTable>self, <object>args[0], _arg(args, nargs, 1, None),
                       None, None, None)


cdef object _connection_close_entry(object self, PyObject** args, Py_ssize_t nargs,
                                    PyObject* kwnames):
    """Connection.close(sent=None, received=None, now=None): 0 to 3."""
    if kwnames != NULL or nargs > 3:
        return _wrappers[_CONNECTION_CLOSE](self, args, nargs, kwnames)
    return connection_close(<Connection>self, _arg(args, nargs, 0, None),
                            _arg(args, nargs, 1, None), _arg(args, nargs, 2, None))


cdef int _install_entry(type cls, str name, int which, void* entry) except -1:
    """Replace the method ``cls.name`` by one whose function is ``entry``.

    Important: 1. ``entry`` must take the positional calls it takes exactly
    as the method's body would, and pass every other call to
    ``_wrappers[which]``, which this sets to Cython's wrapper. 2. Only a
    method as Cython builds it with vectorcall (a method descriptor taking
    fast calls with keywords) is replaced; in another build mode the method
    stays as it is, and the instruction budget shows it. 3. Only at import,
    before the class is used: the type's attribute cache is reset here.
    """
    cdef dict attributes = <dict>(<PyTypeObject*>cls).tp_dict
    original = attributes[name]
    if type(original) is not _METHOD_DESCRIPTOR:
        return 0
    cdef PyMethodDef* method = (<PyMethodDescrObject*>original).d_method
    if method.ml_flags != METH_FASTCALL | METH_KEYWORDS:
        return 0
    _wrappers[which] = <_Wrapper>method.ml_meth
    _entry_defs[which].ml_name = method.ml_name
    _entry_defs[which].ml_meth = entry
    _entry_defs[which].ml_flags = METH_FASTCALL | METH_KEYWORDS
    _entry_defs[which].ml_doc = method.ml_doc
    attributes[name] = PyDescr_NewMethod(cls, &_entry_defs[which])
    PyType_Modified(cls)
    return 0


_install_entry(SourceTable, "accept", _TRACKER_ACCEPT, <void*>_tracker_accept_entry)
_install_entry(SourceTable, "open", _TRACKER_OPEN, <void*>_tracker_open_entry)
_install_entry(SourceTable, "close", _TRACKER_CLOSE, <void*>_tracker_close_entry)
_install_entry(GuardTable, "accept", _GUARD_ACCEPT, <void*>_guard_accept_entry)
_install_entry(GuardTable, "open", _GUARD_OPEN, <void*>_guard_open_entry)
_install_entry(GuardTable, "close", _GUARD_CLOSE, <void*>_guard_close_entry)
_install_entry(Connection, "close", _CONNECTION_CLOSE, <void*>_connection_close_entry)
