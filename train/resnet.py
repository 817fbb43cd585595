"""Residual ternary networks whose eval-mode forward pass is what the exported integer network computes:
the CIFAR ResNets (option-A shortcuts: ResNet-20/32/44/56 and the small ``digits_resnet``) and ResNet-18
(ImageNet layout, 1x1 conv + BN downsample shortcuts).

Why block inputs and outputs share a scale. The IR's residual add is
    y = clamp(((acc * mul + bias) >> shift) + r, lo, hi)
so the shortcut integer ``r`` is added as it is: it must already be on the grid (scale s_out) of the block
output.
- An identity shortcut passes the block input through, so the input must be on s_out: the block input and
  output share one quantizer.
- An option-A shortcut (subsample, append zero channels) is exported as an identity 1x1 strided conv with
  unit requantization (mul 1, bias 0, shift 0, as ``hwgen.frontends.synthetic.NetBuilder.shortcut_a``): a pass-through
  too, same rule. In an option-A network the stem and every block output therefore live on ONE scale, the
  "stream" quantizer. (A requantizing shortcut would free the scales but its 18-bit multiplier is not the
  float ratio s_in / s_out, so float and integer would differ by rare 1-LSB flips.)
- A 1x1 downsample conv + BN (ResNet-18) has its own requantization, so it maps s_in onto s_out directly: its
  output is quantized on s_out, signed (no ReLU before the add), with one bit more than the activations so
  it spans the same magnitude. Each ResNet-18 stage has its own stream scale; stage 1 shares the stem's.
Rounding: the integer add layer rounds the main branch alone, adds the integer shortcut, then clamps. The
float forward takes the same steps (round_half_up(main / s) + q_short), not round((main + short) / s), so a
float rounding in the sum cannot move a value across a half step. ``export.snap_requant`` then makes each
BatchNorm's folded scale the IR's 18-bit multiplier, so what remains is float32 arithmetic in the convs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quant import ActQuant, GridAvgPool, TernaryConv2d, TernaryLinear, fake_quant, round_half_up


class ConvBN(nn.Module):
    """Conv (ternary, or full precision when ``ternary`` is False) without bias, then BatchNorm."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, pad: int, ternary: bool = True):
        super().__init__()
        cls = TernaryConv2d if ternary else nn.Conv2d
        self.conv = cls(cin, cout, k, stride, pad, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def residual_add(main: torch.Tensor, short: torch.Tensor, scale: float, hi: int) -> torch.Tensor:
    """clamp(round_half_up(main / s) + short / s, 0, hi) * s, ``short`` being on the grid of s (so
    ``short / s`` rounds back to its integer exactly). Gradient: that of relu(main + short), zero where the
    value was clipped at ``hi``."""
    with torch.no_grad():
        q = round_half_up(main / scale) + round_half_up(short / scale)
        inside = ((q >= 0) & (q <= hi)).to(main.dtype)
        exact = q.clamp(0, hi) * scale
    pre = (main + short) * inside
    return pre + (exact - pre).detach()


class BasicBlock(nn.Module):
    """conv1 3x3 (stride) -> BN -> ReLU -> quant; conv2 3x3 -> BN; + shortcut; ReLU; quant on ``act_out``.

    ``shortcut``: "identity", "A" (subsample + zero channels) or "B" (1x1 conv + BN). For the first two,
    ``act_in`` must be ``act_out`` (see the module docstring)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str, act_in: ActQuant, act_out: ActQuant,
                 act_bits: int):
        super().__init__()
        if shortcut not in ("identity", "A", "B"):
            raise ValueError(f"shortcut must be identity, A or B, not {shortcut!r}")
        if shortcut == "identity" and (cin != cout or stride != 1):
            raise ValueError(f"an identity shortcut needs cin == cout and stride 1, found {cin}->{cout}/{stride}")
        if shortcut != "B" and act_in is not act_out:
            raise ValueError(f"a {shortcut} shortcut passes its input through: act_in must be act_out")
        self.cin, self.cout, self.stride, self.kind = cin, cout, stride, shortcut
        self.conv1 = ConvBN(cin, cout, 3, stride, 1)
        self.act1 = ActQuant(act_bits)
        self.conv2 = ConvBN(cout, cout, 3, 1, 1)
        self.down = ConvBN(cin, cout, 1, stride, 0) if shortcut == "B" else None
        self.short_bits = act_bits + 1  # signed, same step and magnitude as the unsigned block output
        self._acts = [act_in, act_out]  # a list: the shared quantizers are registered by the network

    @property
    def act_in(self) -> ActQuant:
        return self._acts[0]

    @property
    def act_out(self) -> ActQuant:
        return self._acts[1]

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "B":
            return self.down(x)  # float; quantized onto s_out in forward
        if self.kind == "A":
            x = x[:, :, ::self.stride, ::self.stride]
            return F.pad(x, (0, 0, 0, 0, 0, self.cout - x.shape[1]))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(torch.relu(self.conv1(x)))
        main = self.conv2(h)
        short = self.shortcut(x)
        act = self.act_out
        act.observe(main + short)
        if self.kind == "B":
            half = 1 << (self.short_bits - 1)
            short = fake_quant(short, act.scale, -half, half - 1)
        return residual_add(main, short, act.scale, act.hi)


class TernaryResNet(nn.Module):
    """Stem conv (+ optional 3x3/2 max pool), stages of basic blocks, global average pool, linear classifier.

    ``stem``: (out_channels, kernel, stride, padding). ``widths``/``depths``: per stage. The first block of
    every stage after the first has stride 2. ``float_first_last``: stem conv and classifier in full
    precision (trainable, but not exportable: the IR holds ternary weights only)."""

    def __init__(self, name: str, in_shape: tuple[int, int, int], classes: int, input_scale: float, *,
                 stem: tuple[int, int, int, int], widths: tuple[int, ...], depths: tuple[int, ...],
                 shortcut: str, maxpool: bool = False, input_bits: int = 8, act_bits: int = 8,
                 float_first_last: bool = False):
        super().__init__()
        if shortcut not in ("A", "B") or len(widths) != len(depths):
            raise ValueError(f"shortcut must be A or B and widths/depths of equal length, found {shortcut!r}, "
                             f"{len(widths)}/{len(depths)}")
        self.name, self.in_shape, self.input_scale = name, tuple(in_shape), input_scale
        self.input_bits, self.act_bits, self.float_first_last = input_bits, act_bits, float_first_last
        self.shortcut_kind, self.use_maxpool, self.stem_spec = shortcut, maxpool, tuple(stem)
        self.stem = ConvBN(in_shape[0], stem[0], *stem[1:], ternary=not float_first_last)
        self.stem_act = ActQuant(act_bits)
        self.stage_acts = nn.ModuleList()  # ResNet-18: one stream quantizer per stage after the first
        blocks, names, c, act = [], [], stem[0], self.stem_act
        for i, (width, depth) in enumerate(zip(widths, depths)):
            for j in range(depth):
                stride = 2 if i and not j else 1
                kind = "identity" if stride == 1 and c == width else shortcut
                out_act = act
                if kind == "B":
                    out_act = ActQuant(act_bits)
                    self.stage_acts.append(out_act)
                blocks.append(BasicBlock(c, width, stride, kind, act, out_act, act_bits))
                names.append(f"s{i + 1}b{j + 1}")
                c, act = width, out_act
        self.blocks = nn.ModuleList(blocks)
        self.block_names = names
        self.pool = GridAvgPool(act)
        self.fc = (TernaryLinear if not float_first_last else nn.Linear)(c, classes)

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """``record``: if given, filled with IR layer name -> (float output, its scale) for the stem, the max
        pool and every residual-add layer."""
        rec = record if record is not None else {}
        x = self.stem_act(torch.relu(self.stem(x)))
        rec["stem"] = (x, self.stem_act.scale)
        if self.use_maxpool:
            x = F.max_pool2d(x, 3, 2, 1)  # pads with -inf: padding never wins, as in the integer maxpool
            rec["maxpool"] = (x, self.stem_act.scale)
        for name, block in zip(self.block_names, self.blocks):
            x = block(x)
            rec[f"{name}_conv2"] = (x, block.act_out.scale)
        return self.fc(self.pool(x).flatten(1))

    def prunable(self) -> dict[str, nn.Module]:
        """Convs under the group penalty and pruning, by IR layer name: all but the stem."""
        out = {}
        for name, b in zip(self.block_names, self.blocks):
            out[f"{name}_conv1"], out[f"{name}_conv2"] = b.conv1.conv, b.conv2.conv
            if b.down is not None:
                out[f"{name}_down"] = b.down.conv
        return out

    def weight_layers(self) -> dict[str, nn.Module]:
        """Every layer with weights, by IR layer name."""
        return {"stem": self.stem.conv, **self.prunable(), "fc": self.fc}


def digits_resnet(input_scale: float = 1 / 16, **options) -> TernaryResNet:
    """8x8 digits: stem 1->16 3x3, block 16->16 (identity), block 16->32 /2 (option A), GAP, fc 32->10."""
    return TernaryResNet("digits_resnet", (1, 8, 8), 10, input_scale, stem=(16, 3, 1, 1), widths=(16, 32),
                         depths=(1, 1), shortcut="A", **options)


def resnet_cifar(depth: int, input_size: int = 32, classes: int = 10, input_scale: float = 1 / 255,
                 **options) -> TernaryResNet:
    """ResNet-20/32/44/56 (He et al., CIFAR layout): 3 stages of (depth-2)/6 blocks, option-A shortcuts."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, not {depth}")
    n = (depth - 2) // 6
    return TernaryResNet(f"resnet{depth}", (3, input_size, input_size), classes, input_scale,
                         stem=(16, 3, 1, 1), widths=(16, 32, 64), depths=(n, n, n), shortcut="A", **options)


def resnet18(input_size: int = 224, classes: int = 1000, input_scale: float = 1 / 255, **options) -> TernaryResNet:
    """ResNet-18 (ImageNet layout): 7x7/2 stem, 3x3/2 max pool, 4 stages of 2 blocks, 1x1 downsample."""
    return TernaryResNet("resnet18", (3, input_size, input_size), classes, input_scale, stem=(64, 7, 2, 3),
                         widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), shortcut="B", maxpool=True, **options)


RESNETS = {"resnet20": lambda **o: resnet_cifar(20, **o), "resnet32": lambda **o: resnet_cifar(32, **o),
           "resnet44": lambda **o: resnet_cifar(44, **o), "resnet56": lambda **o: resnet_cifar(56, **o),
           "resnet18": resnet18}
