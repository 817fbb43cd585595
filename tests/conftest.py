import pytest

from hwgen.cli import DIGITS_CONVS
from hwgen.simulate import verilator_on_path
from hwgen.synthetic import chain_model

verilator_on_path()


@pytest.fixture(scope="session")
def small_model():
    """A digits-shaped synthetic chain network, PE-balanced for 4 PEs."""
    return chain_model("small", (1, 8, 8), DIGITS_CONVS, 10, pe=4, density=0.5, seed=1)
