"""Pruning speed-up: cycles of one network on one array with dense ternary weights, the paper's unbalanced
PE-wise pruning, our PE-balanced pruning and unstructured pruning at the same weight density.

    python bench/pruning_speedup.py [--model resnet18|resnet20] [--pe 16] [--lanes 16] [--keep 0.5 0.25]

Cycles come from the analytical model (``hwgen.compile.lower.predicted_cycles``), which the Verilator runs of
tests/test_sim.py match exactly. "Pruned layers" are the ones training prunes (all convs but the stem and
the option-A shortcuts; the classifier stays dense); the ideal is their dense cycles x each layer's kept
share of groups. The speed-up is over the whole network. Last line: ``balanced_vs_ideal: <worst ratio>``.
"""
from __future__ import annotations

import argparse

import numpy as np

from hwgen.contract import mapping
from hwgen.frontends import synthetic
from hwgen.contract.ir import Layer, Model
from hwgen.compile.lower import layer_cycles, lower, predicted_cycles
from hwgen.contract.mapping import prunable as prunable_layers

BUILDERS = {"resnet18": lambda **o: synthetic.resnet18(input_size=224, **o),
            "resnet20": lambda **o: synthetic.resnet_cifar(20, **o)}


def prunable(model: Model) -> list[int]:
    """Indices of the layers training prunes (``hwgen.build.report.prunable``). Taken once from the dense network
    for every variant: the variants rewrite weights, and a rewritten shortcut is no identity any more."""
    names = {l.name for l in prunable_layers(model.layers)}
    return [i for i, l in enumerate(model.layers) if l.name in names]


def unstructured(model: Model, keep: float, seed: int = 0) -> Model:
    """Each nonzero weight of the pruned layers kept with probability ``keep``: the same weight density as
    group pruning at ``keep``, scattered. A group is skipped only if all of its weights are zero."""
    rng = np.random.default_rng(seed)
    layers = list(model.layers)
    for i in prunable(model):
        l = layers[i]
        weight = np.where(rng.random(l.weight.shape) < keep, l.weight, 0).astype(np.int8)
        layers[i] = Layer(**{**l.__dict__, "weight": weight, "mask": mapping.kept_groups(weight, model.lanes)})
    return Model(model.name, model.lanes, model.input, tuple(layers), {**model.meta, "pruning": "unstructured"})


def cycles(model: Model, pruned: list[int], pe: int, lanes: int) -> tuple[int, dict[str, int]]:
    """(whole-network cycles per image, {pruned layer: its cycles})."""
    prog = lower(model, pe, lanes)
    names = {model.layers[i].name for i in pruned}
    return predicted_cycles(prog), {l.name: layer_cycles(prog, l) for l in prog.layers if l.name in names}


def group_density(model: Model, pruned: list[int]) -> dict[str, float]:
    """Kept groups over groups, per pruned layer."""
    return {model.layers[i].name: float(model.layers[i].mask.mean()) for i in pruned}


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(BUILDERS), default="resnet18")
    ap.add_argument("--pe", type=int, default=16)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.25])
    args = ap.parse_args(argv)
    build = BUILDERS[args.model]
    opts = dict(pe=args.pe, lanes=args.lanes, calib_images=1)
    dense = build(density=1.0, **opts)
    pruned = prunable(dense)
    d_all, d_layers = cycles(dense, pruned, args.pe, args.lanes)
    d_pruned = sum(d_layers.values())
    print(f"{args.model}, {args.pe} PEs x {args.lanes} lanes: cycles per image; 'ideal' = sum over the pruned "
          "layers of dense cycles x the layer's kept share of groups")
    print(f"{'variant':<30}{'groups kept':>12}{'pruned layers':>15}{'network':>13}{'speed-up':>10}{'vs ideal':>10}")
    print(f"{'dense ternary':<30}{1:>12.3f}{d_pruned:>15,}{d_all:>13,}{1:>10.2f}{1:>10.3f}")
    worst = 0.0
    for keep in args.keep:
        balanced = build(density=keep, balanced=True, **opts)
        variants = [("PE-balanced", balanced),
                    ("paper (unbalanced)", synthetic.with_unbalanced_pruning(balanced, args.pe)),
                    ("unstructured", unstructured(dense, keep))]
        for name, model in variants:
            c_all, c_layers = cycles(model, pruned, args.pe, args.lanes)
            share = group_density(model, pruned)
            ideal = sum(c_layers.values()) / sum(d_layers[n] * share[n] for n in d_layers)
            kept = sum(model.layers[i].mask.sum() for i in pruned) / sum(model.layers[i].mask.size for i in pruned)
            if name == "PE-balanced":
                worst = max(worst, ideal)
            print(f"{f'{name}, keep {keep:g}':<30}{kept:>12.3f}{sum(c_layers.values()):>15,}{c_all:>13,}"
                  f"{d_all / c_all:>10.2f}{ideal:>10.3f}")
    print("unstructured: a group is skipped only when every one of its lanes x k x k weights is zero; scattered "
          "zeros leave almost every group with a nonzero weight, so the array runs every wave (no speed-up).")
    print(f"balanced_vs_ideal: {worst:.4f}")
    return worst


if __name__ == "__main__":
    main()
