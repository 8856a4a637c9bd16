import pytest

import prism


@pytest.fixture
def cluster():
    """A fresh embedded cluster with 2 CPUs for one test."""
    prism.init(num_cpus=2)
    yield prism
    prism.shutdown()
