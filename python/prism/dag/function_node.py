"""FunctionNode: a remote function call in a task graph (``f.bind(...)``)."""

from prism.dag.dag_node import DAGNode


class FunctionNode(DAGNode):
    """``f.bind(*args, **kwargs)`` of a remote function: executing it submits
    ``f.remote(*args, **kwargs)``, with the nodes among the arguments replaced by their refs,
    and gives the task's ObjectRef."""

    def __init__(self, remote_function, args, kwargs):
        if not callable(getattr(remote_function, "remote", None)):
            raise TypeError(f"FunctionNode takes a remote function (made by @prism.remote), "
                            f"not a {type(remote_function).__name__}")
        self._body = remote_function
        super().__init__(args, kwargs)

    def _execute_impl(self, args, kwargs, execution):
        return self._body.remote(*args, **kwargs)

    def _label(self):
        return getattr(self._body, "__qualname__", "")
