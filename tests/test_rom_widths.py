"""ROM field widths follow from every value a field holds: kernels large against their maps (offsets and
(dy, dx) beyond the map size) and strides larger than any map build, pack without wrapping, and run
bit-exact; a value too wide for its field is refused, never truncated."""
import pytest
from amaranth import Shape
from hypothesis import HealthCheck, given, settings, strategies as st

from hwgen.build.generate import BuildConfig, build, images
from hwgen.compile.lower import UnsupportedError, lower, own_capacity
from hwgen.contract.hardware import Capacity, descriptor_layout
from hwgen.compile.roms import descriptor_words, descriptors, schedule_rom
from hwgen.contract.hardware import pack_struct, widths
from hwgen.sim.stream import random_images, simulate
from hwgen.frontends.synthetic import NetBuilder

PE, LANES = 4, 4


def _field(word: int, offset: int, width: int, signed: bool) -> int:
    value = (word >> offset) & ((1 << width) - 1)
    return value - (1 << width) if signed and value >> (width - 1) else value


def _after_1x1(input_shape, k, stride, pad, channels=4, lanes=LANES, kind="conv"):
    """A 1x1 conv, then the layer under test (so that it is not the stem, which host im2col turns 1x1)."""
    net = NetBuilder("widths", input_shape, lanes=lanes, pe=PE, density=0.75, seed=k * 100 + pad)
    net.conv(channels, 1, pad=0, dense=True)
    net.maxpool(k, stride, pad) if kind == "maxpool" else net.conv(channels, k, stride, pad)
    return net.finish()


def assert_packed_exactly(prog) -> None:
    """Every schedule entry and descriptor field decodes to the value it was packed from."""
    wd = widths(prog)
    words = iter(schedule_rom(prog, wd))
    for l in prog.layers:
        _, h_in, w_in = l.in_shape
        for j in l.schedule.block:
            for ky in range(l.kh):
                for kx in range(l.kw):
                    dy, dx = ky - l.pad, kx - l.pad
                    word = next(words)
                    got = (_field(word, 0, wd.off, True), _field(word, wd.off, wd.dim, True),
                           _field(word, wd.off + wd.dim, wd.dim, True))
                    assert got == (int(j) * h_in * w_in + dy * w_in + dx, dy, dx), (l.name, j, ky, kx)
    layout = descriptor_layout(prog, wd)
    for l, d, word in zip(prog.layers, descriptors(prog), descriptor_words(prog)):
        for name, value in d.items():
            shape = Shape.cast(layout[name].shape)
            assert _field(word, layout[name].offset, shape.width, shape.signed) == value, (l.name, name, value)


@pytest.mark.parametrize("hw, k, pad, stride", [
    (1, 5, 2, 1),  # "4 does not fit 3 signed bits" in schedule_rom
    (1, 9, 4, 1),
    (2, 7, 3, 1),
    (1, 3, 1, 100),  # the descriptor's stride field held 100 as 4
    (1, 9, 8, 8),  # two output pixels, the second anchored 8 rows below a 1-row map
])
def test_large_kernel_or_stride_on_small_maps_builds_exact_images(hw, k, pad, stride):
    prog = lower(_after_1x1((3, hw, hw), k, stride, pad), PE, LANES)
    files = images(prog)
    assert files["sched.hex"] and files["desc.hex"]
    assert_packed_exactly(prog)


def test_large_kernels_on_small_maps_run_bit_exact(tmp_path):
    """The cases above in one network, through Verilator: the RTL reads the wider fields as the reference
    means them (bounds check of far taps, address offsets, a stride past the map)."""
    net = NetBuilder("far_taps", (3, 2, 2), lanes=LANES, pe=PE, density=0.75, seed=7)
    net.conv(8, 1, pad=0, dense=True)
    net.conv(8, 7, 1, 3)  # 2x2 -> 2x2, taps 3 away on a 2-wide map
    net.conv(8, 9, 8, 8)  # 2x2 -> 2x2, anchors 8 apart
    net.conv(8, 3, 100, 1)  # -> 1x1
    net.conv(8, 5, 1, 2)
    net.conv(8, 9, 1, 4)
    model = net.finish()
    out = tmp_path / "far_taps"
    man = build(model, BuildConfig(pe=PE, lanes=LANES), out)
    result = simulate(model, out, random_images(model, 3, seed=2))
    assert result["mismatches"] == 0, (result["mismatch_detail"], result["first_difference"])
    assert result["outputs_checked"] == 3 * man["output_beats"]
    assert result["cycles_per_image"] == man["predicted_cycles"]


@st.composite
def layers_at_their_limits(draw):
    k = draw(st.integers(1, 9))
    pad = draw(st.integers(0, k - 1))
    stride = draw(st.sampled_from([1, 2, 3, 7, 100]))
    least = max(1, k - 2 * pad)  # the padded map holds the kernel
    h, w = draw(st.integers(least, least + 4)), draw(st.integers(least, least + 4))
    kind = draw(st.sampled_from(["conv", "maxpool"]))
    lanes = draw(st.sampled_from([4, 16]))
    channels = draw(st.integers(1, 20))
    first = draw(st.booleans())  # the layer under test as the stem, or after a 1x1 conv
    im2col = draw(st.booleans())
    if first:
        net = NetBuilder("widths", (channels, h, w), lanes=lanes, pe=PE, seed=k)
        net.maxpool(k, stride, pad) if kind == "maxpool" else net.conv(channels, k, stride, pad)
        model = net.finish()
    else:
        model = _after_1x1((3, h, w), k, stride, pad, channels, lanes, kind)
    return model, lanes, im2col


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=layers_at_their_limits())
def test_lowering_and_images_never_raise_for_a_valid_ir(case):
    model, lanes, im2col = case
    prog = lower(model, PE, lanes, stem="im2col" if im2col else "raw")
    images(prog)
    assert_packed_exactly(prog)


def test_capacity_holds_the_reach_and_stride_it_needs():
    need = own_capacity(lower(_after_1x1((3, 1, 1), 9, 100, 4), PE, LANES))
    assert (need.reach, need.stride) == (4, 100)
    small = Capacity(**{**need.__dict__, "reach": 3})
    with pytest.raises(UnsupportedError, match="capacity reach must be at least 4 for this network, found 3"):
        lower(_after_1x1((3, 1, 1), 9, 100, 4), PE, LANES, capacity=small)


def test_a_value_too_wide_for_its_field_is_refused():
    prog = lower(_after_1x1((3, 1, 1), 3, 100, 1), PE, LANES)
    layout = descriptor_layout(prog, widths(prog))
    d = descriptors(prog)[1]
    width = Shape.cast(layout["stride"].shape).width
    assert pack_struct(layout, d) == descriptor_words(prog)[1]
    with pytest.raises(OverflowError, match=f"field stride: {1 << width} does not fit unsigned\\({width}\\)"):
        pack_struct(layout, {**d, "stride": 1 << width})
    with pytest.raises(OverflowError, match="field lo: "):
        pack_struct(layout, {**d, "lo": -(1 << Shape.cast(layout["lo"].shape).width)})
