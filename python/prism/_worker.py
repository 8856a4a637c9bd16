"""The entry point of prism's Python worker processes (started by the node daemon)."""

import sys

from prism._private import execution

if __name__ == "__main__":
    execution.run_worker(sys.argv[1] if len(sys.argv) > 1 else None)
