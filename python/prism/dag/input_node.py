"""InputNode: the input of a task graph, given to ``execute()``; and parts of it."""

from prism.dag.dag_node import DAGNode


class DAGInputData:
    """The input of an ``execute()`` call given more than one value (or keywords): ``inp[i]`` is
    the i-th positional value, ``inp["key"]`` and ``inp.key`` the keyword's value."""

    def __init__(self, *args, **kwargs):
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._args[key]
        if isinstance(key, str):
            return self._kwargs[key]
        raise ValueError("Please only use int index or str as first-level key to access fields of dag input.")

    def __repr__(self):
        return f"DAGInputData(args={self._args!r}, kwargs={self._kwargs!r})"


class InputNode(DAGNode):
    """The input of a task graph. Build the graph inside ``with InputNode() as inp:``; then
    ``dag.execute(value)`` makes ``inp`` that value, and ``inp[0]``, ``inp["key"]``, ``inp.attr``
    parts of it. With several values or keywords, ``dag.execute(1, 2, x=3)``, ``inp[1]`` is 2 and
    ``inp.x`` (or ``inp["x"]``) is 3. A graph has one InputNode."""

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise ValueError("InputNode should not take any args or kwargs.")
        self._attribute_nodes = {}
        self._in_context_manager = False
        super().__init__((), {})

    def __enter__(self):
        self._in_context_manager = True
        return self

    def __exit__(self, *exc_info):
        # The graph stays usable after the block: execute() comes later.
        return False

    def _execute_impl(self, args, kwargs, execution):
        if not self._in_context_manager:
            raise AssertionError("InputNode is a singleton instance that should be only used in context manager for "
                                 "dag building and execution: build the graph inside 'with InputNode() as inp:'.")
        if len(execution.args) == 1 and not execution.kwargs:
            return execution.args[0]
        return DAGInputData(*execution.args, **execution.kwargs)

    def _attribute_node(self, key, accessor):
        node = self._attribute_nodes.get((key, accessor))
        if node is None:
            node = InputAttributeNode(self, key, accessor)
            self._attribute_nodes[(key, accessor)] = node
        return node

    def __getattr__(self, key):
        # Dunder names are Python's protocols (copy, pickle), and before __init__ ran nothing
        # is an input attribute.
        if (key.startswith("__") and key.endswith("__")) or "_attribute_nodes" not in self.__dict__:
            raise AttributeError(key)
        if key in ("bind", "remote"):
            return super().__getattr__(key)
        return self._attribute_node(key, "__getattr__")

    def __getitem__(self, key):
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError("Please only use int index or str as first-level key to access fields of dag input, "
                            f"not {type(key).__name__}.")
        return self._attribute_node(key, "__getitem__")


class InputAttributeNode(DAGNode):
    """A part of the graph's input: ``inp[0]``, ``inp["key"]`` or ``inp.attr``."""

    def __init__(self, dag_input_node, key, accessor_method):
        self._dag_input_node = dag_input_node
        self._key = key
        self._accessor_method = accessor_method
        super().__init__((), {})

    def _upstream(self):
        return [self._dag_input_node]

    def _execute_impl(self, args, kwargs, execution):
        value = execution.results[id(self._dag_input_node)]
        if isinstance(value, DAGInputData):
            return value[self._key]
        if self._accessor_method == "__getattr__":
            return getattr(value, self._key)
        return value[self._key]

    def _label(self):
        return f".{self._key}" if self._accessor_method == "__getattr__" else f"[{self._key!r}]"
