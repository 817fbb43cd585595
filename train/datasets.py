"""Local data sets for the docs/design.md §2 recipes: CIFAR-10 (python batches), ImageNet-style image folders, and
the digits set (``train/data.py``), with the recipes' augmentations as plain torch functions.

Nothing is ever downloaded: every loader reads files that are already on disk and says where it expected them.
Images stay uint8 (0..255) until the model: the integer network's input is the raw pixel (scale 1/255), the
float model sees pixel / 255 (``to_float``). ``normalize`` and the mean/std constants are for float-only
baselines (e.g. evaluating torchvision float weights); the ternary pipeline does not use them.
Every random step takes a ``torch.Generator``, so a fixed seed gives the same crops and flips.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_SCALE = 1 / 255
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch",)
CIFAR_CLASSES = 10
EVAL_CROP_FRACTION = 0.875  # resize to size / 0.875 (256 for 224), then center crop: the usual ImageNet eval


# ------------------------------------------------------------------------------------------ CIFAR-10

def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    """The only callables a CIFAR pickle may name. Taken from numpy's own pickling (``__reduce__``) rather than
    imported by path, because numpy 1 writes ``numpy.core.multiarray`` and numpy 2 ``numpy._core.multiarray``."""
    a = np.zeros(1, dtype=np.uint8)
    reconstruct = a.__reduce__()[0]  # ndarray._reconstruct: old-protocol (and the real CIFAR files') arrays
    frombuffer = a.__reduce_ex__(5)[0]  # numeric._frombuffer: arrays pickled with protocol 5 by modern numpy
    allowed = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that executes no code: ``find_class`` refuses every global except numpy's array/dtype
    reconstruction (_reconstruct, _frombuffer, ndarray, dtype), which the CIFAR batches need and which only
    rebuild arrays. Dicts, lists, bytes, strings and ints need no globals at all."""

    _ALLOWED = _numpy_reconstructors()

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 [N, 3, 32, 32], int64 [N])."""
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the batches were written by Python 2, their str keys come back as bytes
            d = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid CIFAR-10 python batch (expected a pickled dict of numpy data "
                         f"and labels), found a corrupted or unsafe pickle: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path}: expected keys data and labels, found {sorted(map(str, d))}")
    x, y = d["data"], d["labels"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        found = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{path}: expected data uint8 [N, 3072], found {found}")
    try:
        y = np.asarray(y, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{path}: expected integer labels, found {type(y).__name__}") from None
    if y.shape != (x.shape[0],):
        raise ValueError(f"{path}: expected {x.shape[0]} labels, found shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= CIFAR_CLASSES):
        raise ValueError(f"{path}: expected labels in 0..9, found {y.min()}..{y.max()}")
    # a row is 1024 red (row-major 32x32), then 1024 green, then 1024 blue: channel-major, i.e. [3, 32, 32]
    return x.reshape(-1, 3, 32, 32), y


def cifar10_dir(data_dir: str) -> str:
    """The folder holding the batches: ``data_dir`` itself or ``data_dir/cifar-10-batches-py``."""
    for d in (data_dir, os.path.join(data_dir, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(d, CIFAR_TEST_FILES[0])):
            return d
    raise ValueError(f"CIFAR-10 not found: expected the python batches ({', '.join(CIFAR_TRAIN_FILES)}, "
                     f"{CIFAR_TEST_FILES[0]}) in {data_dir} or {os.path.join(data_dir, 'cifar-10-batches-py')}; "
                     f"nothing is downloaded, place them there (cifar-10-python.tar.gz, extracted)")


@dataclass(frozen=True)
class TensorSplit:
    """uint8 images [N, C, H, W] and int64 labels [N], train and test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_cifar10(data_dir: str) -> TensorSplit:
    """The 50000/10000 CIFAR-10 split from the local python batches (read without executing pickled code)."""
    d = cifar10_dir(data_dir)
    out = []
    for names in (CIFAR_TRAIN_FILES, CIFAR_TEST_FILES):
        xs, ys = [], []
        for n in names:
            p = os.path.join(d, n)
            if not os.path.isfile(p):
                raise ValueError(f"CIFAR-10: expected batch file {p}, found none")
            x, y = _read_batch(p)
            xs.append(x)
            ys.append(y)
        out += [torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))]
    return TensorSplit(*out)


# ------------------------------------------------------------------------------------------ transforms

def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> the float model's input pixel / 255 (the IR input scale)."""
    return x.to(torch.float32) * PIXEL_SCALE


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(pixel / 255 - mean) / std per channel, for [C, H, W] or [N, C, H, W] (float baselines only)."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (to_float(x) - m) / s


def cifar_augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR train augmentation on a batch [N, C, H, W]: zero-pad ``pad``, random crop back to H x W, random
    horizontal flip (p = 0.5), each image independently. Same dtype and shape out."""
    n, c, h, w = x.shape
    p = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h)
    cols = ox[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    # one gather for the whole batch: index [n, c, rows, cols]
    return p[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear, antialiased resize of one image [C, H, W]; uint8 in, uint8 out (rounded, clamped)."""
    y = F.interpolate(img[None].to(torch.float32), size=(h, w), mode="bilinear", align_corners=False,
                      antialias=True)[0]
    return y.round().clamp(0, 255).to(img.dtype) if img.dtype == torch.uint8 else y


def random_resized_crop(img: torch.Tensor, size: int, generator: torch.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Inception-style crop of one image [C, H, W]: a random area fraction in ``scale`` and aspect ratio
    (log-uniform) in ``ratio``, resized to size x size; after 10 failed tries, the central crop of the
    clamped aspect ratio (the usual fallback)."""
    _, h, w = img.shape
    area = h * w
    log_r = (float(np.log(ratio[0])), float(np.log(ratio[1])))
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        r = float(np.exp(log_r[0] + (log_r[1] - log_r[0]) * u[1]))
        cw, ch = int(round((target * r) ** 0.5)), int(round((target / r) ** 0.5))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1))
            return _resize(img[:, top:top + ch, left:left + cw], size, size)
    r = w / h
    if r < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif r > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(img[:, top:top + ch, left:left + cw], size, size)


def imagenet_train_transform(img: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop to ``size`` + horizontal flip (p = 0.5), one image [C, H, W]."""
    out = random_resized_crop(img, size, generator)
    return out.flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else out


def imagenet_eval_transform(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to size / 0.875, then center crop size x size, one image [C, H, W]."""
    _, h, w = img.shape
    short = int(round(size / EVAL_CROP_FRACTION))
    if h <= w:
        nh, nw = short, max(short, int(round(w * short / h)))
    else:
        nh, nw = max(short, int(round(h * short / w))), short
    img = _resize(img, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[:, top:top + size, left:left + size]


# ------------------------------------------------------------------------------------------ image folders

def _have_pil() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


PIL_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class ImageFolderDataset(torch.utils.data.Dataset):
    """ImageNet-style tree ``root/<class>/<image>``; classes sorted by name, label = their index.

    Images: .npy arrays [H, W, 3] uint8 always; JPEG/PNG/... only when PIL is installed (decoded to RGB).
    Items are (uint8 [3, size, size], label). ``train``: random resized crop + flip, the randomness drawn from
    a generator seeded by (seed, epoch, index), so an item is the same whatever the worker or order;
    call ``set_epoch`` to get new crops each epoch. Otherwise: resize + center crop."""

    def __init__(self, root: str, size: int, train: bool = False, seed: int = 0):
        if not os.path.isdir(root):
            raise ValueError(f"image folder not found: expected {root}/<class>/<image>; nothing is downloaded")
        self.root, self.size, self.train, self.seed, self.epoch = root, size, train, seed, 0
        self.pil = _have_pil()
        exts = (".npy",) + (PIL_EXTENSIONS if self.pil else ())
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not self.classes:
            raise ValueError(f"{root}: expected one sub-folder per class, found none")
        self.samples: list[tuple[str, int]] = []
        unreadable = []
        for label, cls in enumerate(self.classes):
            for dirpath, _, files in sorted(os.walk(os.path.join(root, cls))):
                for f in sorted(files):
                    ext = os.path.splitext(f)[1].lower()
                    if ext in exts:
                        self.samples.append((os.path.join(dirpath, f), label))
                    elif ext in PIL_EXTENSIONS:
                        unreadable.append(os.path.join(dirpath, f))
        if unreadable:
            raise ValueError(f"{root}: found {len(unreadable)} image files (e.g. {unreadable[0]}) but PIL is not "
                             f"installed; without it only .npy images [H, W, 3] uint8 are supported")
        if not self.samples:
            raise ValueError(f"{root}: expected images ({', '.join(exts)}) under the class folders, found none")

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load(self, path: str) -> torch.Tensor:
        """One image file -> uint8 [3, H, W]."""
        if path.lower().endswith(".npy"):
            a = np.load(path, allow_pickle=False)  # no pickled objects: data only
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"{path}: expected a uint8 array [H, W, 3], found {a.dtype} {a.shape}")
        else:
            from PIL import Image
            with Image.open(path) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        img = self.load(path)
        if self.train:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
            return imagenet_train_transform(img, self.size, g), label
        return imagenet_eval_transform(img, self.size), label


# ------------------------------------------------------------------------------------------ factory

@dataclass
class DataSpec:
    """What the training loop needs to know about a data set.

    ``data``: (uint8/int64 images, labels) tensors held in memory, or a Dataset yielding (image, label).
    ``augment``: for in-memory train data, a batch function (x, generator) -> x applied per step; None when
    there is none or the Dataset augments itself. ``input_scale``: float input = integer pixel * scale."""

    name: str
    data: tuple[torch.Tensor, torch.Tensor] | torch.utils.data.Dataset
    num_classes: int
    input_shape: tuple[int, int, int]
    input_scale: float
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None


DATASETS = ("digits", "cifar10", "imagenet")


def make_dataset(name: str, data_dir: str | None, split: str, *, size: int = 224, seed: int = 0,
                 augment: bool | None = None) -> DataSpec:
    """``name`` in DATASETS, ``split`` "train" or "test" (ImageNet: the ``train`` / ``val`` folders).
    ``augment`` defaults to True for train, False for test."""
    if name not in DATASETS:
        raise ValueError(f"data set must be one of {', '.join(DATASETS)}, not {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    aug = split == "train" if augment is None else augment
    if name == "digits":
        from . import data as digits
        s = digits.load_split()
        x, y = (s.train_x, s.train_y) if split == "train" else (s.test_x, s.test_y)
        return DataSpec(name, (torch.from_numpy(x), torch.from_numpy(y)), 10, (1, 8, 8), digits.INPUT_SCALE)
    if data_dir is None:
        raise ValueError(f"{name} needs a data folder (data_dir), found none")
    if name == "cifar10":
        s = load_cifar10(data_dir)
        xy = (s.train_x, s.train_y) if split == "train" else (s.test_x, s.test_y)
        return DataSpec(name, xy, CIFAR_CLASSES, (3, 32, 32), PIXEL_SCALE, cifar_augment if aug else None)
    sub = os.path.join(data_dir, "train" if split == "train" else "val")
    ds = ImageFolderDataset(sub, size, train=aug, seed=seed)
    return DataSpec(name, ds, len(ds.classes), (3, size, size), PIXEL_SCALE)
