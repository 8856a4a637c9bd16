"""MultiOutputNode: several results of a task graph at once."""

from prism.dag.dag_node import DAGNode


class MultiOutputNode(DAGNode):
    """Groups the graph's outputs: executing ``MultiOutputNode([a, b])`` runs ``a`` and ``b``
    (sharing the nodes they have in common) and gives the list of their results, e.g. refs for
    ``prism.get``."""

    def __init__(self, args):
        if isinstance(args, tuple):
            args = list(args)
        if not isinstance(args, list):
            raise ValueError(f"Invalid input type for `args`, {type(args)}.")
        super().__init__(args, {})

    def _execute_impl(self, args, kwargs, execution):
        return list(args)

    def _label(self):
        return f"{len(self._bound_args)} outputs"
