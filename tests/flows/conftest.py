import pytest
from procs import vta_env


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment for ``vta`` subprocesses: a private Prefect home per test module, analytics off, offline."""
    return vta_env(tmp_path_factory.mktemp("vta"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
