"""Data loading for the §2 recipes: the CIFAR-10 python batches (real format, read without running pickled code),
augmentations (deterministic per seed, shapes kept), image folders, the data set factory, and float initial
weights under torchvision names."""
import os
import pickle

import numpy as np
import pytest
import torch

from train import datasets
from train.init_weights import load_float_init, torchvision_names
from train.resnet import resnet18, resnet_cifar

N = 4


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"synthetic batch", b"data": rng.integers(0, 256, (N, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, N)],
            b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(N)]}


def _write_cifar(folder, protocol=4) -> dict:
    os.makedirs(folder, exist_ok=True)
    batches = {}
    for i, name in enumerate(datasets.CIFAR_TRAIN_FILES + datasets.CIFAR_TEST_FILES):
        batches[name] = _batch(i)
        with open(os.path.join(folder, name), "wb") as f:
            # protocol 4: the real files' structure (numpy arrays via _reconstruct); Python 3 cannot write
            # Python 2's byte strings, its protocol 2 goes through _codecs.encode, which is refused
            pickle.dump(batches[name], f, protocol=protocol)
    return batches


@pytest.mark.parametrize("protocol", [4, pickle.HIGHEST_PROTOCOL])
def test_cifar10_real_format(tmp_path, protocol):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", protocol)
    s = datasets.load_cifar10(str(tmp_path))
    assert s.train_x.shape == (5 * N, 3, 32, 32) and s.test_x.shape == (N, 3, 32, 32)
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    raw = batches["data_batch_2"][b"data"][1]
    img = s.train_x[N + 1]
    # channel-major rows: 1024 red values (row-major 32x32), then green, then blue
    assert img[0, 0, 0] == raw[0] and img[0, 0, 1] == raw[1] and img[0, 1, 0] == raw[32]
    assert img[1, 0, 0] == raw[1024] and img[2, 31, 31] == raw[3071]
    assert s.train_y[N:2 * N].tolist() == batches["data_batch_2"][b"labels"]
    assert s.test_y.tolist() == batches["test_batch"][b"labels"]
    assert torch.equal(datasets.load_cifar10(str(tmp_path / "cifar-10-batches-py")).test_x, s.test_x)


class _Evil:
    def __reduce__(self):
        return os.system, (f"touch {_Evil.marker}",)


def test_cifar10_malicious_pickle_refused(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    _Evil.marker = marker
    d = _batch(9)
    d[b"labels"] = _Evil()
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump(d, f, protocol=4)
    with pytest.raises(ValueError, match=r"data_batch_3.*global (posix|nt|os)\.system is not allowed"):
        datasets.load_cifar10(str(tmp_path))
    assert not marker.exists()


def test_cifar10_errors(tmp_path):
    with pytest.raises(ValueError, match="not found.*nothing is downloaded"):
        datasets.load_cifar10(str(tmp_path / "nowhere"))
    _write_cifar(tmp_path)
    os.remove(tmp_path / "data_batch_4")
    with pytest.raises(ValueError, match="expected batch file .*data_batch_4"):
        datasets.load_cifar10(str(tmp_path))
    d = _batch(4)
    d[b"data"] = d[b"data"][:, :3000]
    with open(tmp_path / "data_batch_4", "wb") as f:
        pickle.dump(d, f, protocol=4)
    with pytest.raises(ValueError, match=r"data_batch_4: expected data uint8 \[N, 3072\], found uint8 \(4, 3000\)"):
        datasets.load_cifar10(str(tmp_path))
    (tmp_path / "data_batch_4").write_bytes(pickle.dumps(_batch(4), protocol=4)[:100])
    with pytest.raises(ValueError, match="data_batch_4: not a valid CIFAR-10"):
        datasets.load_cifar10(str(tmp_path))


def test_augmentations_deterministic():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    a = datasets.cifar_augment(x, torch.Generator().manual_seed(3))
    b = datasets.cifar_augment(x, torch.Generator().manual_seed(3))
    c = datasets.cifar_augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    # every output is a crop of the zero-padded input, possibly flipped
    p = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(6):
        crops = [p[i, :, r:r + 32, s:s + 32] for r in range(9) for s in range(9)]
        assert any(torch.equal(a[i], q) or torch.equal(a[i], q.flip(-1)) for q in crops)
    img = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    t1 = datasets.imagenet_train_transform(img, 24, torch.Generator().manual_seed(1))
    t2 = datasets.imagenet_train_transform(img, 24, torch.Generator().manual_seed(1))
    assert t1.shape == (3, 24, 24) and t1.dtype == torch.uint8 and torch.equal(t1, t2)
    e = datasets.imagenet_eval_transform(img, 24)
    assert e.shape == (3, 24, 24) and e.dtype == torch.uint8
    n = datasets.normalize(x, datasets.CIFAR_MEAN, datasets.CIFAR_STD)
    assert n.shape == x.shape and n.dtype == torch.float32


def test_image_folder_and_factory(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("b_cls", "a_cls"):
            os.makedirs(tmp_path / split / cls)
            for i in range(2):
                np.save(tmp_path / split / cls / f"{i}.npy", rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8))
    ds = datasets.ImageFolderDataset(str(tmp_path / "val"), 16)
    assert ds.classes == ["a_cls", "b_cls"] and len(ds) == 4
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == 1
    spec = datasets.make_dataset("imagenet", str(tmp_path), "train", size=16, seed=5)
    assert spec.num_classes == 2 and spec.input_shape == (3, 16, 16)
    assert torch.equal(spec.data[1][0], spec.data[1][0])  # same seed, epoch, index -> same crop
    np.save(tmp_path / "val" / "a_cls" / "bad.npy", np.zeros((4, 4), np.float32))
    ds = datasets.ImageFolderDataset(str(tmp_path / "val"), 16)
    with pytest.raises(ValueError, match=r"bad.npy: expected a uint8 array \[H, W, 3\]"):
        ds[[p for p, _ in ds.samples].index(str(tmp_path / "val" / "a_cls" / "bad.npy"))]
    if not datasets._have_pil():
        (tmp_path / "val" / "a_cls" / "x.JPEG").write_bytes(b"")
        with pytest.raises(ValueError, match="PIL is not installed.*npy"):
            datasets.ImageFolderDataset(str(tmp_path / "val"), 16)
    _write_cifar(tmp_path / "c")
    spec = datasets.make_dataset("cifar10", str(tmp_path / "c"), "train")
    assert spec.data[0].shape == (5 * N, 3, 32, 32) and spec.augment is datasets.cifar_augment
    assert datasets.make_dataset("cifar10", str(tmp_path / "c"), "test").augment is None
    spec = datasets.make_dataset("digits", None, "test")
    assert spec.input_shape == (1, 8, 8) and spec.num_classes == 10 and spec.data[0].shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="one of digits, cifar10, imagenet"):
        datasets.make_dataset("mnist", None, "train")


def _to_torchvision(model) -> dict:
    """The model's state dict under torchvision names, with changed values so a load is visible."""
    names = {v: k for k, v in torchvision_names(model).items()}
    sd = model.state_dict()
    return {names[k]: (v.float() + 0.5).to(v.dtype) if v.is_floating_point() else v + 1
            for k, v in sd.items() if k in names}


@pytest.mark.parametrize("make", [lambda: resnet_cifar(20), lambda: resnet18(input_size=32, classes=10)])
def test_float_init_round_trip(tmp_path, make):
    torch.manual_seed(0)
    src, dst = make(), make()
    tv = _to_torchvision(src)
    assert "conv1.weight" in tv and "layer1.0.conv1.weight" in tv and "fc.bias" in tv
    if src.shortcut_kind == "B":
        assert "layer2.0.downsample.0.weight" in tv and "layer4.1.bn2.running_var" in tv
    torch.save(tv, tmp_path / "init.pt")
    report = load_float_init(dst, str(tmp_path / "init.pt"))
    names = torchvision_names(dst)
    for k, v in tv.items():
        assert torch.equal(dst.state_dict()[names[k]], v), k
    assert len(report["loaded"]) == len(tv) and "stem_act.running_max" in report["skipped"]


def test_float_init_errors(tmp_path):
    model = resnet_cifar(20)
    tv = _to_torchvision(model)
    tv["fc.weight"] = torch.zeros(1000, 64)
    tv["fc.bias"] = torch.zeros(1000)
    torch.save(tv, tmp_path / "init.pt")
    before = model.state_dict()["stem.conv.weight"].clone()
    with pytest.raises(ValueError, match=r"shape mismatches: fc.weight: expected \(10, 64\), found \(1000, 64\)"):
        load_float_init(model, str(tmp_path / "init.pt"))
    assert torch.equal(model.state_dict()["stem.conv.weight"], before)  # nothing changed on error
    report = load_float_init(model, str(tmp_path / "init.pt"), exclude=("fc.",))
    assert "fc.weight" in report["skipped"]
    tv = _to_torchvision(model)
    del tv["layer1.0.conv1.weight"]
    tv["layer9.0.conv1.weight"] = torch.zeros(1)
    torch.save(tv, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="unknown keys: layer9.0.conv1.weight.*missing weights: blocks.0.conv1.conv"):
        load_float_init(model, str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match="expected a state dict file"):
        load_float_init(model, str(tmp_path / "none.pt"))


def test_train_resnet20_on_cifar_files(tmp_path):
    """`python -m train --model resnet20 --dataset cifar10 --data-dir D`: reads the batches, augments,
    trains, prunes, exports an IR the generator accepts, and writes the test split as uint8 images."""
    import json
    import subprocess
    import sys

    import numpy as np

    from hwgen.contract import ir

    _write_cifar(tmp_path / "cifar")
    out = tmp_path / "runs" / "r20"
    res = subprocess.run([sys.executable, "-m", "train", "--model", "resnet20", "--dataset", "cifar10",
                          "--data-dir", str(tmp_path / "cifar"), "--pe", "16", "--epochs", "2", "--quiet",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    model = ir.load(out / "model.ir")
    assert model.input.shape == (3, 32, 32) and model.meta["dataset"] == "cifar10"
    assert sum(layer.residual is not None for layer in model.layers) == 9  # three stages of three blocks
    images = np.load(out / "test_images.npy")
    assert images.dtype == np.uint8 and images.shape == (N, 3, 32, 32)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["int_accuracy"] <= 1.0 and metrics["test_images"] == N
    wrong = subprocess.run([sys.executable, "-m", "train", "--model", "resnet20", "--dataset", "digits",
                            "--pe", "16", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert wrong.returncode == 2 and "model resnet20 trains on cifar10, not digits" in wrong.stderr
