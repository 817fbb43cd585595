import pytest
import torch

from hwgen.synthetic import chain_model
from hwgen.zoo import DIGITS_CONVS


@pytest.fixture(scope="session")
def small_model():
    """A digits-shaped synthetic chain network, PE-balanced for 4 PEs."""
    return chain_model("small", (1, 8, 8), DIGITS_CONVS, 10, pe=4, density=0.5, seed=1)


@pytest.fixture(scope="module")
def one_thread():
    """Train as the CLI does, on one thread (OpenMP threads spin and crawl when the cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
