"""``hwgen report``: a self-contained report.html with the per-layer plots, the same bytes from the same
files, and one-line errors for folders that are not builds."""
import base64
import json
import re

from hwgen.cli import main


def _build(tmp_path):
    out = tmp_path / "b"
    assert main(["build", "--model", "resnet20", "--input-size", "8", "--pe", "16", "--out", str(out)]) == 0
    return out


def test_report_has_the_plots_and_is_deterministic(tmp_path, capsys):
    out = _build(tmp_path)
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_bytes()
    pngs = [base64.b64decode(b) for b in re.findall(rb'base64,([A-Za-z0-9+/=]+)"', page)]
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 5000 for p in pngs)
    man = json.loads((out / "manifest.json").read_text())
    assert f"{man['predicted_cycles']:,}".encode() in page and b"Group density per layer" in page
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_bytes() == page


def test_report_shows_the_simulation_when_there(tmp_path):
    out = _build(tmp_path)
    (out / "sim_result.json").write_text(json.dumps({"images": 7, "mismatches": 0, "cycles_per_image": 1234}))
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<th>simulated images</th><td>7</td>" in page and "<td>1234</td>" in page


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "expected a build folder with manifest.json" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    assert main(["report", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected JSON, found unreadable content" in err


def test_report_shows_synthesis_resources(tmp_path):
    out = _build(tmp_path)
    synth = {"built": True, "part": "LFE5U-85F", "lut4": 21623, "ff": 2909, "bram": 25, "dsp": 16,
             "available": {"lut": 83640, "ff": 83640, "bram": 208, "dsp": 156},
             "clocks": {"clk": {"fmax_mhz": 41.34, "constraint_mhz": 100, "passed": False}}}
    (out / "synth_report.json").write_text(json.dumps(synth))
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<th>synthesis: LUT4</th><td>21,623 of 83,640</td>" in page
    assert "41.34 MHz (target 100 MHz, missed)" in page
    assert page.count("data:image/png;base64,") == 4  # the resource plot joins the three layer plots
