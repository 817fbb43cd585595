"""The host-side packer and unpacker of the stream beats (docs/stream.md)."""
import numpy as np

from hwgen.contract import encoding


def test_input_beats_are_blocks_then_pixels_with_lanes_low_first():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 3, 2))  # 20 channels: two blocks of 16, the second padded
    beats = encoding.pack_input(image, lanes=16, bits=8)
    assert len(beats) == 2 * 6
    for j in range(2):
        for pix in range(6):
            lanes = encoding.unpack_lanes(beats[j * 6 + pix], 8, 16, signed=False)
            y, x = divmod(pix, 2)
            expected = [int(image[c, y, x]) if c < 20 else 0 for c in range(16 * j, 16 * j + 16)]
            assert lanes == expected


def test_im2col_matches_a_direct_window_read():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(3, 9, 9))
    cols = encoding.im2col(image, kernel=7, stride=2, padding=3)
    assert cols.shape == (147, 5, 5)
    padded = np.pad(image, ((0, 0), (3, 3), (3, 3)))
    for c, ky, kx, oy, ox in [(0, 0, 0, 0, 0), (2, 6, 6, 4, 4), (1, 3, 5, 2, 1)]:
        assert cols[c * 49 + ky * 7 + kx, oy, ox] == padded[c, oy * 2 + ky, ox * 2 + kx]


def test_output_unpacking_restores_the_tensor():
    rng = np.random.default_rng(2)
    values = rng.integers(-32768, 32768, size=(10, 2, 3))
    beats = [int(v) & 0xFFFF for v in values.transpose(1, 2, 0).reshape(-1)]  # channels fastest
    assert np.array_equal(encoding.unpack_output(beats, (10, 2, 3), 16, signed=True), values)
