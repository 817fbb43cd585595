"""No import runs back up the stages of hwgen (``LAYERS``), and the RTL is a function of the hardware contract
alone: ``hwgen/rtl`` imports only ``hwgen.contract`` and ``hwgen.encoding`` (and Amaranth and the standard
library), so building the Verilog never loads the lowering, the reference or torch."""
import ast
import subprocess
import sys
from pathlib import Path

HWGEN = Path(__file__).resolve().parent.parent / "hwgen"
RTL_MAY_IMPORT = {"hwgen.contract", "hwgen.encoding"}  # besides hwgen.rtl itself
CONTRACT_MAY_IMPORT = {"hwgen.encoding"}
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
            # ``from . import x`` may name a module x: count it as one
            found |= {f"{base}.{a.name}" for a in node.names} if node.module is None else {base}
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
    bad += layering_violations(HWGEN / "contract.py", CONTRACT_MAY_IMPORT)
    assert not bad, "\n".join(bad)


def test_the_import_check_sees_relative_and_nested_imports(tmp_path):
    """The check above can fail: an RTL module reaching back into the lowering, from a function body."""
    rtl = tmp_path / "hwgen" / "rtl"
    rtl.mkdir(parents=True)
    (rtl / "bad.py").write_text("from ..contract import Hardware\nfrom .delay import delayed\n"
                                "def f():\n    from ..lower import Program\n    import numpy\n")
    assert layering_violations(rtl / "bad.py", RTL_MAY_IMPORT, tmp_path) == [
        "hwgen/rtl/bad.py imports hwgen.lower", "hwgen/rtl/bad.py imports numpy"]


def test_importing_the_rtl_loads_no_torch_and_no_lowering():
    modules = sorted(f"hwgen.rtl.{f.stem}" for f in (HWGEN / "rtl").glob("*.py") if f.stem != "__init__")
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "loaded = {'hwgen.lower', 'hwgen.roms', 'hwgen.reference', 'hwgen.ir'} & set(sys.modules)\n"
            "assert not loaded, sorted(loaded)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HWGEN.parent)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_issue_s_one_line_check_holds():
    run = subprocess.run([sys.executable, "-c", "import sys, hwgen.rtl.top; assert 'torch' not in sys.modules"],
                         capture_output=True, text=True, cwd=HWGEN.parent)
    assert run.returncode == 0, run.stderr[-2000:]


# The stages of hwgen from the bottom up: a module may import only modules of lower rows (and the RTL its
# own package). Each new module gets a row here, which is the point: where it sits is decided, not drifted.
LAYERS = [
    ("mapping", "outdir", "netlist", "report_html"),  # numpy or standard library only
    ("encoding",),
    ("ir", "contract"),  # the IR (numpy) and the hardware contract (Amaranth)
    ("reference", "lower", "rtl"),
    ("synthetic", "roms", "synth_targets"),
    ("report", "zoo"),
    ("build",),
    ("simulate", "synth_fit"),
    ("uart_protocol", "synth"),
    ("uart_sim", "serial_runner"),
    ("cli",),
    ("__main__",),
]


def back_arrows(root: Path = HWGEN) -> list[str]:
    rank = {name: i for i, row in enumerate(LAYERS) for name in row}
    bad = []
    for path in sorted(root.glob("*.py")) + sorted((root / "rtl").glob("*.py")):
        name = "rtl" if path.parent.name == "rtl" else path.stem
        if name == "__init__":
            continue
        if name not in rank:
            bad.append(f"hwgen/{path.name} has no row in LAYERS")
            continue
        for module in sorted(imported_modules(path, root.parent)):
            parts = module.split(".")
            if parts[0] != "hwgen" or len(parts) == 1 or parts[1] == "__version__":
                continue
            target = parts[1]
            if target == name == "rtl":
                continue
            if target not in rank or rank[target] >= rank[name]:
                bad.append(f"{path.relative_to(root.parent).as_posix()} imports {module}, "
                           f"which is not below it in LAYERS")
    return bad


def test_no_import_runs_back_up_the_layers():
    assert not back_arrows(), "\n".join(back_arrows())


def test_the_layer_check_sees_a_back_arrow(tmp_path):
    pkg = tmp_path / "hwgen"
    (pkg / "rtl").mkdir(parents=True)
    (pkg / "lower.py").write_text("from .rtl.pe import partial_width\n")  # the arrow this issue removed
    (pkg / "mapping.py").write_text("import numpy\n")
    (pkg / "newstage.py").write_text("")
    assert back_arrows(pkg) == ["hwgen/lower.py imports hwgen.rtl.pe, which is not below it in LAYERS",
                                "hwgen/newstage.py has no row in LAYERS"]
