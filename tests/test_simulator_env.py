"""The cocotb runs get their environment explicitly (this process's stays as it was), and a failed run is
one clear error naming what failed and where its log is."""
import os
import sys

import pytest

from hwgen.sim.runner import (MAKE_OVERRIDES, TB_ROOT, SimulatorError, build_model, run_testbench, simulator_env,
                              verilator_bin_dir, verilator_runner)


def test_runner_environment_is_explicit_and_leaves_the_process_alone():
    before_env, before_path = dict(os.environ), list(sys.path)
    runner = verilator_runner()
    for _ in range(2):  # a second build or test must not grow MAKEFLAGS or PATH
        runner.env = {}
        runner._set_env_common()
    assert runner.env["PATH"].split(os.pathsep)[0] == verilator_bin_dir()
    assert runner.env["MAKEFLAGS"].count(MAKE_OVERRIDES) == 1
    assert TB_ROOT in runner.env["PYTHONPATH"].split(os.pathsep)
    runner._simulator_in_path_build_only()
    assert runner.executable == os.path.join(verilator_bin_dir(), "verilator")
    assert dict(os.environ) == before_env and sys.path == before_path


def test_simulator_env_keeps_what_it_is_given():
    env = simulator_env({"PATH": "/bin", "MAKEFLAGS": "-j2", "HWGEN_CASE": "case.json"})
    assert env["PATH"] == verilator_bin_dir() + os.pathsep + "/bin"
    assert env["MAKEFLAGS"] == MAKE_OVERRIDES + " -j2"
    assert env["HWGEN_CASE"] == "case.json"


class FakeRunner:
    """Stands in for cocotb's runner: its test writes ``writes`` to the result file, then exits ``code``."""

    def __init__(self, result_file, writes=None, code=None):
        self.result_file, self.writes, self.code = result_file, writes, code

    def build(self, **kwargs):
        raise RuntimeError("Command failed with return code: 2")

    def test(self, **kwargs):
        if self.writes is not None:
            self.result_file.write_text(self.writes)
        if self.code is not None:
            raise SystemExit(self.code)


def test_failed_run_without_results_names_testbench_and_log(tmp_path):
    result, log = tmp_path / "out.json", tmp_path / "sim.log"
    with pytest.raises(SimulatorError) as exc:
        run_testbench(FakeRunner(result, code=3), result, log_file=log, test_module="sim.tb_top")
    assert str(exc.value) == f"the simulation of sim.tb_top wrote no results (exit status 3); see {log}"


def test_testbench_check_failure_still_returns_its_results(tmp_path):
    result = tmp_path / "out.json"
    result.write_text('{"stale": true}')  # a previous run's results must not be taken for this one's
    assert run_testbench(FakeRunner(result, writes='{"outputs": []}', code=1), result, log_file=None,
                         test_module="sim.tb_top") == {"outputs": []}
    with pytest.raises(SimulatorError, match="wrote no results; see the output above"):
        run_testbench(FakeRunner(result), result, log_file=None, test_module="sim.tb_top")


def test_failed_build_names_folder_and_log(tmp_path):
    log = tmp_path / "verilator_build.log"
    with pytest.raises(SimulatorError) as exc:
        build_model(FakeRunner(None), log_file=log, build_dir=tmp_path / "sim_build")
    assert str(exc.value) == (f"the Verilator build in {tmp_path / 'sim_build'} failed (Command failed with "
                              f"return code: 2); see {log}")
