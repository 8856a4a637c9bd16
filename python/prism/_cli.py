"""The `prism` command of an installed package: runs the prism tool shipped inside it."""

import os
import sys


def main():
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "prism")
    if not os.path.exists(tool):
        sys.exit("prism: the prism tool is not in this installation (" + tool + ")")
    os.execv(tool, [tool] + sys.argv[1:])


if __name__ == "__main__":
    main()
