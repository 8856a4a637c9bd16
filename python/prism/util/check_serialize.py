"""Finding what keeps an object from being sent to a task, as Ray's
``ray.util.inspect_serializability``.

prism pickles functions, classes and arguments with cloudpickle (``prism._private.serialization``).
When that fails, the error names a type ("cannot pickle '_thread.lock' object") but not which
variable, deep inside a closure or an object, holds it. ``inspect_serializability`` walks the
object to find those variables: a function's globals and captured variables, an object's
attributes and members, the methods of a class, the items of lists, tuples, sets and dicts.
"""

import inspect
import sys

from prism._private import serialization


class FailureTuple:
    """One object that cannot be pickled: ``obj``, the variable ``name`` it was found under,
    the ``parent`` object that refers to it (None at the top), and ``path``, the names from the
    inspected object down to it."""

    def __init__(self, obj, name, parent, path=()):
        self.obj = obj
        self.name = name
        self.parent = parent
        self.path = tuple(path)

    def __repr__(self):
        return f"FailTuple({self.name} [obj={self.obj}, parent={self.parent}])"


class _Printer:
    def __init__(self, print_file):
        self.level = 0
        self.print_file = print_file

    def print(self, msg):
        print("    " * self.level + msg, file=self.print_file or sys.stdout)


def _pickle_error(obj):
    """None if prism can pickle `obj`, else the error pickling it raised."""
    try:
        serialization.serialize(obj)
    except Exception as e:  # whatever pickling raises is the answer
        return e
    return None


def _short(obj, limit=120):
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _function_parts(fn):
    """(heading, {name: value}) groups a function refers to: globals and captured variables."""
    try:
        closure = inspect.getclosurevars(fn)
    except (TypeError, ValueError):
        return []
    groups = []
    if closure.globals:
        groups.append((f"Detected {len(closure.globals)} global variables. Checking serializability...",
                       closure.globals))
    if closure.nonlocals:
        groups.append((f"Detected {len(closure.nonlocals)} nonlocal variables. Checking serializability...",
                       closure.nonlocals))
    return groups


# Objects not worth walking into: they fail (or pass) as a whole, and walking a frame or a
# module would list everything in reach.
_OPAQUE = (inspect.ismodule, inspect.isframe, inspect.iscode, inspect.istraceback, inspect.isgenerator,
           inspect.iscoroutine, inspect.isasyncgen, inspect.isbuiltin)


def _object_parts(obj):
    """(heading, {name: value}) groups an object holds: items of containers, the function and
    instance of a bound method, else its non-dunder, non-builtin members (and its class, when
    the class itself does not pickle)."""
    if any(test(obj) for test in _OPAQUE):
        return []
    if isinstance(obj, dict):
        return [(f"Detected {len(obj)} items. Checking serializability...",
                 {f"[{k!r}]": v for k, v in obj.items()})]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"Detected {len(obj)} items. Checking serializability...",
                 {f"[{i}]": v for i, v in enumerate(obj)})]
    if inspect.ismethod(obj):
        return [("Checking the method's function and instance...",
                 {"__func__": obj.__func__, "__self__": obj.__self__})]
    try:
        names = dir(obj)
    except Exception:  # a broken __dir__: look at the instance dict only
        names = list(getattr(obj, "__dict__", {}))
    found = {}
    for name in names:
        if name.startswith("__") and name.endswith("__"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # a property that raises is not what fails to pickle
            continue
        # Builtins pickle by name; the object's own bound methods fail exactly when it does.
        if inspect.isbuiltin(value) or (inspect.ismethod(value) and value.__self__ is obj):
            continue
        found[name] = value
    if not isinstance(obj, type) and _pickle_error(type(obj)) is not None:
        found["__class__"] = type(obj)  # a class pickled by value, whose methods may hold the culprit
    if not found:
        return []
    return [(f"Detected {len(found)} members. Checking serializability...", found)]


class _Walk:
    def __init__(self, printer):
        self.printer = printer
        self.failures = set()
        # Objects already inspected, by id, so that cycles end; held so that their ids are not
        # reused by objects made during the walk (bound methods are made on each access).
        self._seen = {}

    def inspect(self, obj, name, depth, parent, path):
        """Whether `obj` pickles; if not, records the innermost objects found to fail."""
        error = _pickle_error(obj)
        if error is None:
            return True
        self.printer.print(f"!!! FAIL serialization: {error}")
        path = path + ((name,) if name is not None else ())
        if id(obj) in self._seen:
            return False  # met before (a cycle, or shared): its failures are recorded there
        self._seen[id(obj)] = obj
        if depth <= 0:
            self.failures.add(FailureTuple(obj, name, parent, path))
            return False
        parts = _function_parts(obj) if inspect.isfunction(obj) else _object_parts(obj)
        found = False
        for heading, members in parts:
            self.printer.print(heading)
            self.printer.level += 1
            try:
                for child_name, child in members.items():
                    self.printer.print(f"Serializing '{child_name}' {_short(child)}...")
                    if not self.inspect(child, child_name, depth - 1, obj, path):
                        found = True
            finally:
                self.printer.level -= 1
        if not found:
            # Nothing inside it fails on its own: the object itself is what cannot be pickled.
            self.printer.print(f"WARNING: Did not find non-serializable object in {_short(obj)}. "
                               "This may be an oversight.")
            self.failures.add(FailureTuple(obj, name, parent, path))
        return False


def inspect_serializability(base_obj, name=None, depth=3, print_file=None):
    """Finds what keeps ``base_obj`` from being pickled for a task or an actor.

    ``name``: what to call it in the report; ``depth``: how many levels of globals, captured
    variables, members and items to walk; ``print_file``: where the report goes (a file
    object; stdout by default).

    Returns (True, set()) when it pickles, else (False, {FailureTuple, ...}): the innermost
    objects found that do not pickle, each with its name, the object referring to it and the
    path to it."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, not {depth!r}")
    printer = _Printer(print_file)
    declaration = f"Checking Serializability of {_short(base_obj)}"
    rule = "=" * min(len(declaration), 80)
    printer.print(rule)
    printer.print(declaration)
    printer.print(rule)
    walk = _Walk(printer)
    ok = walk.inspect(base_obj, name, depth, None, ())
    if not ok:
        printer.print(rule)
        listing = "\n".join(f"\t{f!r}" for f in walk.failures)
        printer.print(f"Variable: \n\n{listing}\n\nwas found to be non-serializable. There may be multiple "
                      "other undetected variables that were non-serializable. ")
        printer.print("Consider either removing the instantiation/imports of these variables or moving the "
                      "instantiation into the scope of the function/class. ")
        printer.print(rule)
    return ok, walk.failures


__all__ = ["inspect_serializability", "FailureTuple"]
