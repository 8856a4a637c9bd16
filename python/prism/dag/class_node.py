"""ClassNode and ClassMethodNode: actors and their method calls in a task graph."""

from prism.dag.dag_node import DAGNode
from prism.dag.input_node import InputNode


class ClassNode(DAGNode):
    """``Cls.bind(*args, **kwargs)`` of an actor class: executing it creates the actor,
    ``Cls.remote(*args, **kwargs)``, and gives its handle. Each ``execute()`` creates a new
    actor (once per call, however many method nodes use it), as in Ray; an actor that is to
    outlive one execution is made with ``.remote()`` and its methods bound on the handle.

    ``node.method.bind(...)`` is a ClassMethodNode calling that method of the actor. The calls
    bound on one ClassNode run in the order they were bound: executing one submits every call
    bound before it too."""

    def __init__(self, actor_class, args, kwargs):
        if not callable(getattr(actor_class, "remote", None)):
            raise TypeError(f"ClassNode takes an actor class (made by @prism.remote), not a "
                            f"{type(actor_class).__name__}")
        self._body = actor_class
        self._last_call = None  # the last ClassMethodNode bound on this node
        super().__init__(args, kwargs)
        if any(isinstance(n, InputNode) for n in self._arg_nodes):
            raise ValueError("InputNode handles user dynamic input the DAG, and cannot be used as args or kwargs "
                             "in ClassNode constructor because it is not available at class construction or "
                             "binding time.")

    def _execute_impl(self, args, kwargs, execution):
        return self._body.remote(*args, **kwargs)

    def __getattr__(self, method_name):
        if (method_name.startswith("__") and method_name.endswith("__")) or "_body" not in self.__dict__:
            raise AttributeError(method_name)
        if method_name in ("bind", "remote"):
            return super().__getattr__(method_name)
        methods = getattr(self._body, "_methods", None)
        if methods is not None and method_name not in methods:
            raise AttributeError(f"actor class {getattr(self._body, '__qualname__', self._body)} has no method "
                                 f"'{method_name}'")
        return _UnboundClassMethodNode(self, method_name)

    def _label(self):
        return getattr(self._body, "__qualname__", "")


class _UnboundClassMethodNode:
    """``class_node.method``: its ``.bind(...)`` makes the ClassMethodNode."""

    def __init__(self, class_node, method_name):
        self._class_node = class_node
        self._method_name = method_name

    def bind(self, *args, **kwargs):
        return ClassMethodNode(self._class_node, self._method_name, args, kwargs)

    def remote(self, *args, **kwargs):
        raise AttributeError(".remote() cannot be used on ClassMethodNodes. Use .bind() instead to express an "
                             "symbolic actor call.")


class ClassMethodNode(DAGNode):
    """A method call of an actor in a task graph: ``class_node.method.bind(...)`` (the actor
    the ClassNode creates) or ``handle.method.bind(...)`` (a live actor). Executing it submits
    ``actor.method.remote(...)`` and gives the call's ObjectRef."""

    def __init__(self, parent, method_name, args, kwargs):
        from prism.actor import ActorHandle
        if not isinstance(parent, (ClassNode, ActorHandle)):
            raise TypeError(f"a ClassMethodNode calls a method of a ClassNode or an actor handle, not of a "
                            f"{type(parent).__name__}")
        if not isinstance(method_name, str) or not method_name:
            raise TypeError("method_name must be a non-empty str")
        self._parent = parent
        self._method_name = method_name
        self._prev_call = None
        if isinstance(parent, ClassNode):
            # Calls on one ClassNode keep their bind order (a call depends on the one before).
            self._prev_call = parent._last_call
            parent._last_call = self
        super().__init__(args, kwargs)

    def get_method_name(self):
        return self._method_name

    def _upstream(self):
        first = []
        if isinstance(self._parent, ClassNode):
            first.append(self._parent)
        if self._prev_call is not None:
            first.append(self._prev_call)
        return first + self._arg_nodes

    def _execute_impl(self, args, kwargs, execution):
        actor = execution.results[id(self._parent)] if isinstance(self._parent, ClassNode) else self._parent
        return getattr(actor, self._method_name).remote(*args, **kwargs)

    def _label(self):
        return f"{self._method_name}()"
