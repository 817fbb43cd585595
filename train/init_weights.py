"""Float initial weights for the ternary ResNets (docs/design.md §2: ImageNet runs fine-tune from float weights).

A local state dict is read with ``torch.load(weights_only=True)``, which rebuilds tensors and containers only and
never runs pickled code. Keys may use torchvision's ResNet names (conv1, bn1, layer1.0.conv1,
layer2.0.downsample.0, fc, ...) or the model's own (stem.conv, blocks.0.conv1.conv, ...). Nothing is downloaded.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

# suffix of a block key in our model -> torchvision's, for a BasicBlock (see train/resnet.py)
_BLOCK_PARTS = {"conv1.conv.": "conv1.", "conv1.bn.": "bn1.", "conv2.conv.": "conv2.", "conv2.bn.": "bn2.",
                "down.conv.": "downsample.0.", "down.bn.": "downsample.1."}
_OPTIONAL = ("num_batches_tracked",)  # older checkpoints lack it; its value only matters with momentum=None


def torchvision_names(model: nn.Module) -> dict[str, str]:
    """torchvision key -> model key, for every weight/BatchNorm entry of a ``TernaryResNet``.

    Stem conv/bn -> conv1/bn1; block "s{i}b{j}" -> layer{i}.{j-1}; classifier -> fc. The activation quantizers
    (stem_act, stage_acts, act1) have no torchvision counterpart and are left out."""
    block_names = getattr(model, "block_names", None)
    if block_names is None:
        raise ValueError(f"torchvision names need a TernaryResNet (train/resnet.py), found {type(model).__name__}")
    out = {}
    for key in model.state_dict():
        tv = None
        if key.startswith("stem.conv."):
            tv = "conv1." + key[len("stem.conv."):]
        elif key.startswith("stem.bn."):
            tv = "bn1." + key[len("stem.bn."):]
        elif key.startswith("fc."):
            tv = key
        else:
            m = re.match(r"blocks\.(\d+)\.(.*)$", key)
            if m:
                stage, block = re.fullmatch(r"s(\d+)b(\d+)", block_names[int(m.group(1))]).groups()
                for ours, theirs in _BLOCK_PARTS.items():
                    if m.group(2).startswith(ours):
                        tv = f"layer{stage}.{int(block) - 1}.{theirs}{m.group(2)[len(ours):]}"
        if tv is not None:
            out[tv] = key
    return out


def _first(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_float_init(model: nn.Module, path: str, exclude: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Load a local float state dict into ``model`` (torchvision or native names; a "state_dict" wrapper and a
    DataParallel "module." prefix are accepted). ``exclude``: key prefixes of the file (either naming) to
    ignore, e.g. ("fc.",) when the class count differs.

    Unknown keys, missing weights and shape mismatches raise one ValueError listing the first few of each;
    nothing is changed then. Returns {"loaded": model keys set, "skipped": model keys left as they were}."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"initial weights: expected a state dict file at {path}, found none") from None
    except Exception as e:  # weights_only refuses code and unknown globals: say so in one line
        raise ValueError(f"{path}: expected a torch state dict loadable with weights_only=True, found: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a dict of name -> tensor, found {type(sd).__name__}")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}

    own = model.state_dict()
    tv_to_model = torchvision_names(model)
    mapped, unknown, excluded = {}, [], set()
    for k, v in sd.items():
        target = tv_to_model.get(k, k if k in own else None)
        if k.startswith(exclude) or (target is not None and target.startswith(exclude)):
            if target is not None:
                excluded.add(target)
            continue
        if target is None:
            unknown.append(k)
        else:
            mapped[target] = v
    mismatch = [f"{k}: expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
                for k, v in mapped.items() if v.shape != own[k].shape]
    missing = [k for k in tv_to_model.values()
               if k not in mapped and k not in excluded and not k.endswith(_OPTIONAL)]
    problems = []
    if mismatch:
        problems.append(f"{len(mismatch)} shape mismatches: {_first(mismatch)} (to leave a layer out, e.g. a "
                        "classifier for other classes, exclude its prefix: --init-exclude fc.)")
    if unknown:
        problems.append(f"{len(unknown)} unknown keys: {_first(unknown)}")
    if missing:
        problems.append(f"{len(missing)} missing weights: {_first(missing)}")
    if problems:
        raise ValueError(f"{path} does not fit {getattr(model, 'name', type(model).__name__)}: "
                         + "; ".join(problems))
    merged = dict(own)
    merged.update({k: v.to(own[k].dtype) for k, v in mapped.items()})
    model.load_state_dict(merged, strict=True)
    return {"loaded": sorted(mapped), "skipped": sorted(k for k in own if k not in mapped)}
