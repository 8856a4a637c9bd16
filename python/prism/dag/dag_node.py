"""DAGNode: a call bound to its arguments, some of which are other nodes, run by ``execute()``."""

import copy

_CONTAINERS = (list, tuple, dict, set, frozenset)


def _find_nodes(value, found, seen):
    """Appends to `found` the DAGNodes in `value`: itself, or inside lists, tuples (named ones
    too), dicts (their values), sets and frozensets, however deeply nested."""
    if isinstance(value, DAGNode):
        if id(value) not in seen:
            seen.add(id(value))
            found.append(value)
        return
    if not isinstance(value, _CONTAINERS) or id(value) in seen:
        return
    seen.add(id(value))  # a container holding itself is walked once
    for item in (value.values() if isinstance(value, dict) else value):
        _find_nodes(item, found, seen)


def _replace_nodes(value, results):
    """`value` with each DAGNode in it replaced by its result; containers without nodes are
    returned as they are (not copied)."""
    if isinstance(value, DAGNode):
        return results[id(value)]
    if not isinstance(value, _CONTAINERS):
        return value
    nested = []
    _find_nodes(value, nested, set())
    if not nested:
        return value
    if isinstance(value, dict):
        if type(value) is dict:
            return {k: _replace_nodes(v, results) for k, v in value.items()}
        out = copy.copy(value)  # OrderedDict, defaultdict, ...: keep the type and its settings
        for k, v in value.items():
            out[k] = _replace_nodes(v, results)
        return out
    items = [_replace_nodes(v, results) for v in value]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*items)
    return type(value)(items)


class DAGNode:
    """A node of a task graph: a remote function call, an actor's creation, an actor method
    call, or the graph's input. Its arguments may be plain values or other nodes, also inside
    lists, tuples, dicts and sets (nodes inside other objects are not looked for).

    ``node.execute(*args, **kwargs)`` submits every node the node depends on, each once, children
    before parents, and returns what the node itself gives: an ObjectRef for a call, an actor
    handle for an actor's creation. Nodes hand each other refs, not values: a node's argument
    that is another node becomes that node's ref, which the task then receives as its value
    (or, inside a container, as the ref itself), as with ``.remote()``. The arguments of
    ``execute`` feed the graph's InputNode."""

    def __init__(self, args, kwargs):
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs)
        found = []
        seen = set()
        for value in self._bound_args:
            _find_nodes(value, found, seen)
        for value in self._bound_kwargs.values():
            _find_nodes(value, found, seen)
        self._arg_nodes = found

    def get_args(self):
        """The arguments the node was bound with."""
        return self._bound_args

    def get_kwargs(self):
        """The keyword arguments the node was bound with (a copy)."""
        return dict(self._bound_kwargs)

    def _upstream(self):
        """The nodes that must run before this one, in the order they are submitted."""
        return self._arg_nodes

    def _execute_impl(self, args, kwargs, execution):
        """Runs this node once its upstream nodes ran: `args` and `kwargs` are its bound
        arguments with nodes replaced by their results; `execution` is the ``execute()`` call
        (its input, and the results of the nodes run so far)."""
        raise NotImplementedError

    def execute(self, *args, **kwargs):
        """Submits this node and every node it depends on; returns this node's result (an
        ObjectRef for a call). ``args`` and ``kwargs`` are the graph's input (InputNode)."""
        return _Execution(args, kwargs).run(self)

    def __getattr__(self, attr):
        if attr == "bind":
            raise AttributeError(f".bind() cannot be used again on {type(self)} ")
        if attr == "remote":
            raise AttributeError(f".remote() cannot be used on {type(self)}. To execute the task graph for this "
                                 "node, use .execute().")
        raise AttributeError(f"{type(self).__name__} has no attribute '{attr}'")

    def __repr__(self):
        return f"{type(self).__name__}({self._label()})"

    def _label(self):
        return ""


class _Execution:
    """One ``execute()`` call: the results of the nodes run so far, by node id."""

    def __init__(self, args, kwargs):
        self.args = args
        self.kwargs = kwargs
        self.results = {}
        self._input_node = None

    def run(self, root):
        # Depth-first, children before parents, without recursion so that long chains work.
        results = self.results
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if id(node) in results:
                continue
            if not ready:
                stack.append((node, True))
                for child in reversed(node._upstream()):
                    if id(child) not in results:
                        stack.append((child, False))
                continue
            self._check_input_node(node)
            args = tuple(_replace_nodes(a, results) for a in node._bound_args)
            kwargs = {k: _replace_nodes(v, results) for k, v in node._bound_kwargs.items()}
            results[id(node)] = node._execute_impl(args, kwargs, self)
        return results[id(root)]

    def _check_input_node(self, node):
        from prism.dag.input_node import InputNode
        if isinstance(node, InputNode):
            if self._input_node is not None and self._input_node is not node:
                raise AssertionError("Each DAG should only have one unique InputNode.")
            self._input_node = node
