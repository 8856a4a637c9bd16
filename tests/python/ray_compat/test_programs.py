"""Runs every program in this folder (Ray Core documentation programs, with only the import
changed to prism) as its own driver; each checks its own output and exits 0 when it holds."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = sorted(f for f in os.listdir(HERE) if f.endswith(".py") and not f.startswith(("test_", "conftest")))


@pytest.mark.parametrize("program", PROGRAMS)
def test_program(program):
    done = subprocess.run([sys.executable, os.path.join(HERE, program)], capture_output=True, text=True,
                          timeout=300, cwd=HERE)
    assert done.returncode == 0, f"{program} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
