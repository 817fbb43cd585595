"""One compiled model runs every build of the same hardware: the check is equality of the contract's
``Hardware`` (recorded beside the model, read back from each build's manifest), so a build for other sizes is
refused before anything runs."""
import dataclasses
import json

import pytest

from hwgen.build.generate import BuildConfig, build_images
from hwgen.contract.hardware import Hardware, hardware
from hwgen.sim.stream import compiled_for, random_images, record_compiled, simulate


def _images_build(model, cfg, out):
    build_images(model, cfg, out)
    return json.loads((out / "manifest.json").read_text())


def test_a_manifest_records_the_program_s_hardware(tiny, tmp_path):
    cfg = BuildConfig(2, 4, 2)
    manifest = _images_build(tiny, cfg, tmp_path / "b")
    assert Hardware.of_manifest(manifest) == hardware(cfg.lower(tiny))
    hw = Hardware.of_manifest(manifest)
    assert Hardware.from_json(json.loads(json.dumps(hw.to_json()))) == hw


def test_a_compiled_model_refuses_a_build_of_other_hardware(tiny, tmp_path):
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    record_compiled(compiled, _images_build(tiny, BuildConfig(2, 4, 2), tmp_path / "a"))
    assert compiled_for(compiled)[0] == "hwgen_top"
    prog = BuildConfig(2, 4, 2).lower(tiny)
    wider = dataclasses.replace(prog.cap, buf_depth=prog.cap.buf_depth + 1)
    for other, cfg in [("tile", BuildConfig(2, 4, 4)), ("capacity", BuildConfig(2, 4, 2, capacity=wider)),
                       ("pe_kind", BuildConfig(2, 4, 2, pe_kind="mac"))]:
        out = tmp_path / other
        _images_build(tiny, cfg, out)
        with pytest.raises(RuntimeError, match="compiled for other hardware"):
            simulate(tiny, out, random_images(tiny, 1), compiled=compiled)


def test_a_folder_without_a_record_is_not_a_compiled_model(tiny, tmp_path):
    _images_build(tiny, BuildConfig(2, 4, 2), tmp_path / "a")
    (tmp_path / "empty").mkdir()
    assert compiled_for(tmp_path / "empty") is None
    with pytest.raises(RuntimeError, match="empty is not a compiled model"):
        simulate(tiny, tmp_path / "a", random_images(tiny, 1), compiled=tmp_path / "empty")
