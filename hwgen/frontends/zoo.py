"""The synthetic model zoo of ``hwgen build --model NAME``: seeded ternary networks of known shapes, by name.

They let hardware work go on without a trained model: the hardware, cycles and memory sizes are those of a
trained network of the same shape (hwgen.frontends.synthetic builds them).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from . import synthetic
from ..contract.ir import Model

# (out_channels, kernel, stride, padding) of each conv of the digits CNN; train/models.py builds it from this
DIGITS_CONVS = ((16, 3, 1, 1), (32, 3, 2, 1), (32, 3, 1, 1), (64, 1, 1, 0))
PAPER_GROUP_DENSITY = 0.765  # ResNet-18 / ImageNet in Yang, He, Fan (AAAI 2020): 16 / 0.765 ~ 21x


class ZooError(ValueError):
    pass


@dataclass(frozen=True)
class ZooModel:
    make: Callable[..., Model]  # (input_size, **synthetic.NetBuilder options) -> the network
    input_size: int  # default height and width of the input
    min_input_size: int  # the smallest input every layer of the network still fits


def _digits(input_size: int, **options) -> Model:
    return synthetic.chain_model("digits", (1, input_size, input_size), DIGITS_CONVS, 10, **options)


MODELS = {
    "digits": ZooModel(_digits, 8, 1),
    "resnet18": ZooModel(synthetic.resnet18, 224, 32),
    **{f"resnet{depth}": ZooModel(partial(synthetic.resnet_cifar, depth), 32, 8) for depth in (20, 32, 44, 56)},
}
NAMES = tuple(MODELS)


def build(name: str, *, pe: int, lanes: int = 16, input_size: int | None = None, seed: int = 0,
          density: float = PAPER_GROUP_DENSITY) -> Model:
    """The seeded synthetic network ``name``, PE-wise pruned for ``pe`` PEs of ``lanes`` lanes to group
    ``density``; ``input_size`` None: the model's default."""
    if name not in MODELS:
        raise ZooError(f"model must be one of {', '.join(NAMES)}, not {name!r}")
    entry = MODELS[name]
    size = entry.input_size if input_size is None else input_size
    if size < entry.min_input_size:
        raise ZooError(f"input size of {name} must be at least {entry.min_input_size}, not {size}")
    return entry.make(size, lanes=lanes, pe=pe, density=density, seed=seed)
