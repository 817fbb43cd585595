"""Named training recipes: the papers' hyper-parameters (docs/design.md §2) as TrainConfig overrides.

``python -m train --recipe NAME ...`` starts from the recipe; any option given on the command line wins.
Where a paper leaves a value open (the ImageNet epoch count, the share of groups kept), the recipe says
what it chose and why, in ``docs/training.md``.
"""
from __future__ import annotations

# SGD, Nesterov momentum 0.9, lr 0.1, 200 epochs, x0.1 at 80 and 120, x0.5 at 160, wd 3e-4, batch 128. The
# schedule spans the whole run: epochs 0-119 train with WPC, 120-199 fine-tune, with the same optimizer.
_WACV_CIFAR = dict(dataset="cifar10", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=3e-4, batch_size=128,
                   epochs=200, schedule="step", threshold="max", delta=0.05)

RECIPES: dict[str, dict] = {
    # He, Gong, Fan (WACV 2019): ternary ResNet on CIFAR-10 from scratch, every layer ternary, no pruning
    # (λ = 0 and every group kept: the fine-tune stage changes nothing, so this is one 200-epoch run).
    "wacv19-cifar": dict(model="resnet20", **_WACV_CIFAR, lam=0.0, keep_fraction=1.0),
    # Yang, He, Fan (AAAI 2020) on CIFAR-10: the same schedule with WPC (λ = 5e-4, r = 0.7, mean mode), P = 16.
    "aaai20-cifar": dict(model="resnet20", **_WACV_CIFAR, lam=5e-4, ratio=0.7, wpc_mode="mean", lanes=16),
    # Yang, He, Fan (AAAI 2020) on ImageNet: fine-tune ResNet-18 from float weights (--init), Adam lr 1e-4,
    # wd 5e-6, λ = 5e-4, r = 0.7, P = 64, δ = 0.03 for the convs; keep 76.5% of the groups (their 21x).
    "aaai20-imagenet": dict(model="resnet18", dataset="imagenet", optimizer="adam", lr=1e-4, weight_decay=5e-6,
                            batch_size=256, epochs=30, schedule="cosine", lam=5e-4, ratio=0.7, wpc_mode="mean",
                            lanes=64, delta=0.03, keep_fraction=0.765),
    # The CI-sized digits recipe (the defaults): Adam lr 3e-3, cosine, 40 epochs.
    "digits": dict(model="digits", dataset="digits"),
}
NEEDS_INIT = ("aaai20-imagenet",)  # recipes that fine-tune from float weights


def recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, not {name!r}")
    return dict(RECIPES[name])
