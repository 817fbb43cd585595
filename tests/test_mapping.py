import numpy as np
import pytest

from hwgen.contract import mapping


def test_balanced_mask_keeps_equal_groups_per_pe_in_every_block():
    rng = np.random.default_rng(0)
    scores = rng.random((64, 5))
    mask = mapping.balanced_mask(scores, pe=16, keep_fraction=0.5)
    for j in range(5):
        per_pe = [int(mask[p::16, j].sum()) for p in range(16)]
        assert per_pe == [2] * 16
    sched = mapping.schedule(mask, 16)
    assert sched.waves == (2,) * 5 and sched.idle_slots == 0
    # each kept group appears exactly once, in its own PE's column
    seen = sorted((int(sched.block[r]), int(o)) for r, o in np.argwhere(sched.slots >= 0) for o in [sched.slots[r, o]])
    assert seen == sorted((int(j), int(o)) for o, j in np.argwhere(mask))
    for r in range(sched.rows):
        for p in range(16):
            o = sched.slots[r, p]
            assert o < 0 or (o % 16 == p and mask[o, sched.block[r]])


def test_unbalanced_schedule_counts_idle_slots():
    mask = np.zeros((8, 1), bool)
    mask[[0, 2, 4], 0] = True  # PE 0 of 2 keeps three groups, PE 1 none
    sched = mapping.schedule(mask, 2)
    assert sched.waves == (3,) and sched.idle_slots == 3


def test_kept_groups_and_norms_agree():
    w = np.zeros((4, 40, 3, 3), np.int8)
    w[1, 17, 0, 0] = -1
    w[3, 39, 2, 2] = 1
    kept = mapping.kept_groups(w, 16)
    assert kept.shape == (4, 3) and kept.sum() == 2 and kept[1, 1] and kept[3, 2]


@pytest.mark.parametrize("pe, lanes, message", [
    (3, 16, r"pe must be a positive divisor of lanes \(16\), not 3"),
    (0, 16, r"pe must be a positive divisor of lanes \(16\), not 0"),
    (4, 12, "lanes must be a power of two >= 1, not 12"),
])
def test_check_pe_lanes_messages(pe, lanes, message):
    with pytest.raises(mapping.ConfigError, match=message):
        mapping.check_pe_lanes(pe, lanes)


def test_conv_out_size_is_torchs_output_size():
    """The one rule behind the IR's out_shape, the exporter and the host's im2col, against torch's conv2d and
    max_pool2d over every small size, kernel, stride and padding (a rectangular map: rows and columns)."""
    import torch

    for n in range(1, 10):
        for k in range(1, 6):
            for s in range(1, 4):
                for p in range(k):
                    if n + 2 * p < k:
                        continue
                    x = torch.zeros(1, 1, n, n + 1)
                    want = (mapping.conv_out_size(n, k, s, p), mapping.conv_out_size(n + 1, k, s, p))
                    assert torch.nn.functional.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p).shape[2:] == want
                    if 2 * p <= k:  # torch pads a pooling window by at most half of it
                        assert torch.nn.functional.max_pool2d(x, k, s, p).shape[2:] == want
