"""No import runs back up the stages of hwgen (``LAYERS``), and the RTL is a function of the hardware contract
alone: ``hwgen/rtl`` imports only ``hwgen.contract.hardware``, its memory-tier part ``dram_layout``, and
``hwgen.contract.encoding`` (and Amaranth and the standard library), so building the Verilog never loads the
lowering, the reference or torch."""
import ast
import subprocess
import sys
from pathlib import Path

HWGEN = Path(__file__).resolve().parent.parent / "hwgen"
RTL_MAY_IMPORT = {"hwgen.contract.hardware", "hwgen.contract.dram_layout", "hwgen.contract.encoding"}  # and rtl
CONTRACT_MAY_IMPORT = {"hwgen.contract.encoding"}
OUTSIDE_HWGEN = {"amaranth"} | set(sys.stdlib_module_names)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module an ``import`` in ``path`` names (at any depth), relative imports resolved from ``root``,
    the folder holding the hwgen package."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # ``from .pkg import x`` may name a module x of pkg: count it as that module
            where = root.joinpath(*base.split("."))
            modules = {f"{base}.{a.name}" for a in node.names
                       if (where / f"{a.name}.py").exists() or (where / a.name / "__init__.py").exists()}
            found |= modules or {base}
    return found


def layering_violations(path: Path, may_import: set[str], root: Path = HWGEN.parent) -> list[str]:
    bad = []
    for module in sorted(imported_modules(path, root)):
        top = module.split(".")[0]
        allowed = (module in may_import or module.startswith("hwgen.rtl.") or module == "hwgen.rtl"
                   if top == "hwgen" else top in OUTSIDE_HWGEN)
        if not allowed:
            bad.append(f"{path.relative_to(root).as_posix()} imports {module}")
    return bad


def test_rtl_imports_only_the_contract_and_encoding():
    files = sorted((HWGEN / "rtl").glob("*.py"))
    assert len(files) >= 8, files
    bad = [v for f in files for v in layering_violations(f, RTL_MAY_IMPORT)]
    bad += layering_violations(HWGEN / "contract" / "hardware.py", CONTRACT_MAY_IMPORT)
    bad += layering_violations(HWGEN / "contract" / "dram_layout.py", CONTRACT_MAY_IMPORT | {"hwgen.contract.hardware"})
    assert not bad, "\n".join(bad)


def test_the_import_check_sees_relative_and_nested_imports(tmp_path):
    """The check above can fail: an RTL module reaching back into the lowering, from a function body."""
    rtl = tmp_path / "hwgen" / "rtl"
    rtl.mkdir(parents=True)
    (rtl / "bad.py").write_text("from ..contract.hardware import Hardware\nfrom .delay import delayed\n"
                                "def f():\n    from ..compile.lower import Program\n    import numpy\n")
    assert layering_violations(rtl / "bad.py", RTL_MAY_IMPORT, tmp_path) == [
        "hwgen/rtl/bad.py imports hwgen.compile.lower", "hwgen/rtl/bad.py imports numpy"]


def test_importing_the_rtl_loads_no_torch_and_no_lowering():
    modules = sorted(f"hwgen.rtl.{f.stem}" for f in (HWGEN / "rtl").glob("*.py") if f.stem != "__init__")
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "loaded = {'hwgen.compile.lower', 'hwgen.compile.roms', 'hwgen.contract.reference', 'hwgen.contract.ir'}"
            " & set(sys.modules)\n"
            "assert not loaded, sorted(loaded)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HWGEN.parent)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_issue_s_one_line_check_holds():
    run = subprocess.run([sys.executable, "-c", "import sys, hwgen.rtl.top; assert 'torch' not in sys.modules"],
                         capture_output=True, text=True, cwd=HWGEN.parent)
    assert run.returncode == 0, run.stderr[-2000:]


# The stages of hwgen from the bottom up, as packages, and in each package its modules from the bottom up. A
# module may import modules of packages in lower rows and earlier modules of its own package (the RTL, one
# stage, may import itself in any order). Each new module or package must be given its place here, which is
# the point: where it sits is decided, not drifted into.
LAYERS = [
    {"contract": ["mapping", "encoding", "ir", "hardware", "dram_layout", "reference"]},
    {"compile": ["lower", "units", "roms", "dram", "memplan"], "rtl": None, "frontends": ["synthetic", "zoo"]},
    {"build": ["outdir", "report_html", "report", "generate"]},
    {"host": ["protocol", "serial_runner"]},
    {"sim": ["runner", "stream", "uart", "axi"], "fpga": ["netlist", "family", "ecp5", "ice40", "litedram", "targets", "fit", "flow", "synth_cli"]},
    {"cli": None},
    {"__main__": None},
]


def _place(parts: list[str]) -> tuple[int, str, int] | None:
    """(row, package, position in the package) of module ``hwgen.<parts>``; None if it has no place."""
    for row, packages in enumerate(LAYERS):
        if parts[0] in packages:
            order = packages[parts[0]]
            if order is None:
                return row, parts[0], 0
            if len(parts) == 2 and parts[1] in order:
                return row, parts[0], order.index(parts[1])
    return None


def back_arrows(root: Path = HWGEN) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("").parts
        if rel[-1] == "__init__" or "__pycache__" in rel:
            continue
        here = _place(list(rel))
        if here is None:
            bad.append(f"hwgen/{'/'.join(rel)}.py has no place in LAYERS")
            continue
        for module in sorted(imported_modules(path, root.parent)):
            parts = module.split(".")
            if parts[0] != "hwgen" or len(parts) == 1 or parts[1] == "__version__":
                continue
            there = _place(parts[1:3])
            if there is None and len(parts) == 2:  # a package itself (``from . import x`` names x below)
                continue
            same_package = there is not None and there[1] == here[1]
            ok = there is not None and (there[0] < here[0] or same_package and (
                LAYERS[here[0]][here[1]] is None or there[2] < here[2]))
            if not ok:
                bad.append(f"{path.relative_to(root.parent).as_posix()} imports {module}, "
                           f"which is not below it in LAYERS")
    return bad


def test_no_import_runs_back_up_the_layers():
    assert not back_arrows(), "\n".join(back_arrows())


def test_the_layer_check_sees_a_back_arrow(tmp_path):
    pkg = tmp_path / "hwgen"
    for sub in ("rtl", "compile", "contract", "build"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "compile" / "lower.py").write_text("from ..rtl.pe import partial_width\n")  # the arrow issue 14 removed
    (pkg / "contract" / "mapping.py").write_text("from .encoding import CODE\nimport numpy\n")  # up its package
    (pkg / "contract" / "ir.py").write_text("from . import encoding, mapping\n")
    (pkg / "build" / "report.py").write_text("def f():\n    from ..sim.stream import simulate\n")
    (pkg / "newstage.py").write_text("")
    assert back_arrows(pkg) == [
        "hwgen/build/report.py imports hwgen.sim.stream, which is not below it in LAYERS",
        "hwgen/compile/lower.py imports hwgen.rtl.pe, which is not below it in LAYERS",
        "hwgen/contract/mapping.py imports hwgen.contract.encoding, which is not below it in LAYERS",
        "hwgen/newstage.py has no place in LAYERS"]


def test_every_package_and_module_has_a_place():
    """LAYERS names only what exists, so a renamed module cannot leave a stale row behind."""
    for packages in LAYERS:
        for package, order in packages.items():
            if order is None:
                assert (HWGEN / f"{package}.py").exists() or (HWGEN / package / "__init__.py").exists(), package
            else:
                assert sorted(order) == sorted(p.stem for p in (HWGEN / package).glob("*.py")
                                               if p.stem != "__init__"), package
