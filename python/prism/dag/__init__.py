"""prism.dag: lazy task graphs, as Ray's classic DAG API (``ray.dag``).

``.bind()`` on a remote function, an actor class or an actor method records the call instead of
making it; nodes passed as arguments of other nodes form a graph, and ``node.execute()`` submits
it, each node once, and returns the node's ObjectRef:

    import prism
    from prism.dag import InputNode, MultiOutputNode

    @prism.remote
    def inc(x):
        return x + 1

    with InputNode() as inp:
        a = inc.bind(inp)
        dag = MultiOutputNode([inc.bind(a), inc.bind(inc.bind(a))])

    prism.get(dag.execute(1))   # [3, 4]
"""

from prism.dag.class_node import ClassMethodNode, ClassNode
from prism.dag.dag_node import DAGNode
from prism.dag.function_node import FunctionNode
from prism.dag.input_node import DAGInputData, InputAttributeNode, InputNode
from prism.dag.output_node import MultiOutputNode

__all__ = [
    "DAGNode", "FunctionNode", "ClassNode", "ClassMethodNode", "InputNode", "InputAttributeNode", "DAGInputData",
    "MultiOutputNode",
]
