"Shared fixtures: the smoke embedded benchmark, generated once per test session into a temporary folder."
import pytest
from cad_nb.benchmark import make_3c_benchmark


@pytest.fixture(scope="session")
def smoke_benchmark(tmp_path_factory):
    "The smoke-size embedded benchmark (3CAD layout), seed 0."
    return make_3c_benchmark(tmp_path_factory.mktemp("bench"), "smoke", seed=0)
