import pytest
import torch

from hwgen.contract import ir
from hwgen.frontends.synthetic import chain_model
from hwgen.frontends.zoo import DIGITS_CONVS


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


@pytest.fixture(scope="module")
def tiny():
    """One 3x3 conv of 8 channels and a classifier on a 4x4 image, 2 PEs x 4 lanes."""
    return chain_model("tiny", (1, 4, 4), [(8, 3, 1, 1)], 4, lanes=4, pe=2, density=1.0, seed=1)


@pytest.fixture(scope="module")
def tiny_ir(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ir") / "tiny.ir"
    ir.save(tiny, path)
    return path
