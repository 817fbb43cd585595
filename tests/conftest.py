import pytest

from hwgen.simulate import verilator_on_path
from hwgen.synthetic import chain_model

verilator_on_path()

DIGITS_SHAPE = ((1, 8, 8), [(16, 3, 1, 1), (32, 3, 2, 1), (32, 3, 1, 1), (64, 1, 1, 0)], 10)


@pytest.fixture(scope="session")
def small_model():
    """A digits-shaped synthetic chain network, PE-balanced for 4 PEs."""
    shape, convs, classes = DIGITS_SHAPE
    return chain_model("small", shape, convs, classes, pe=4, density=0.5, seed=1)
