"""Random shapes per layer kind (hypothesis), all run on ONE compiled Verilator model.

The Verilog depends only on pe, lanes, tile and the capacity (hwgen.contract.hardware.Capacity); each random network
is lowered into that capacity and only its ROM images and manifest are written, so a case costs one
simulator start (about a second), not a Verilator build. Every case is checked bit for bit against the
reference, and the engine's cycle count against the analytical model; half the cases also run with random
input gaps and output backpressure. A failing case prints its drawn parameters (with the seed of its
weights and images) and leaves the IR and the images on disk, with the command that replays it.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hwgen.contract import ir
from hwgen.build.generate import BuildConfig, build_images
from hwgen.sim.stream import simulate
from netgen import CAPACITY, KINDS, LANES, PE, TILE, cases, compiled_model

EXAMPLES = 10  # per layer kind in CI


@pytest.mark.parametrize("kind", KINDS)
def test_random_networks_match_reference(kind, tmp_path_factory):
    anchor, compiled = compiled_model(tmp_path_factory)
    base = tmp_path_factory.mktemp(f"prop_{kind}")
    ran = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=cases(kind), stall=st.sampled_from([0.0, 0.3]))
    def check(case, stall):
        model, images, description = case
        out = base / f"case{len(ran)}"
        man = build_images(model, BuildConfig(PE, LANES, TILE, CAPACITY), out)
        ir.save(model, out / "case.ir")
        np.save(out / "images.npy", images)
        result = simulate(model, out, images, stall=stall, seed=len(ran), compiled=compiled)
        ran.append(description)
        replay = (f"python -m hwgen sim --ir {out / 'case.ir'} --inputs {out / 'images.npy'} --images {len(images)} "
                  f"--pe {PE} --lanes {LANES} --tile {TILE} --stall {stall}")
        assert result["mismatches"] == 0, f"{description}\n{result['first_difference']}\nreplay: {replay}"
        assert not result["stream_problems"], f"{description}\n{result['stream_problems']}\nreplay: {replay}"
        assert result["cycles_per_image"] == man["predicted_cycles"], f"{description}\nreplay: {replay}"

    check()
    assert len(ran) >= EXAMPLES  # hypothesis really ran every example (none filtered away)
