"""The package's layers (docs: /work/shared/STYLE.md, "Imports point down the list"): every fashiongen module
imports only modules of its own layer or lower, and loading a model for the app or the evaluation never loads
the training code or Accelerate. A module missing from LAYERS fails the test until someone places it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import fashiongen

PACKAGE_DIR = Path(fashiongen.__file__).resolve().parent
PACKAGE = "fashiongen"

# One way down: a module may import its own layer or lower. "pkg.*" covers the package itself and everything
# under it; other names are single modules. Place every new module here on purpose.
LAYERS: dict[str, int] = {
    "fashiongen": 0, "fashiongen.utils": 0, "fashiongen.config": 0, "fashiongen.settings": 0, "fashiongen.runs": 0,
    "fashiongen.data.*": 1, "fashiongen.text.*": 1, "fashiongen.models.*": 1, "fashiongen.grid": 1,
    "fashiongen.plots": 1, "fashiongen.generators": 1,
    "fashiongen.diffusion.*": 2, "fashiongen.gan.*": 2, "fashiongen.upsampler.*": 2,  # generator families
    "fashiongen.families": 3, "fashiongen.pipeline": 3, "fashiongen.evaluation.*": 3,
    "fashiongen.jobs": 4, "fashiongen.submission": 4, "fashiongen.app.*": 4, "fashiongen.challenge.*": 4,
    "fashiongen.release": 4,
    "fashiongen.train.*": 5,  # may import everything; nothing imports it
}


def layer_of(module: str) -> int | None:
    """The layer of `module`: its own row, else the nearest "pkg.*" row above it; None when it has none."""
    if module in LAYERS:
        return LAYERS[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        row = ".".join(parts[:end]) + ".*"
        if row in LAYERS:
            return LAYERS[row]
    return None


@dataclass(frozen=True)
class Import:
    target: str  # absolute module name, e.g. "fashiongen.train.export"
    line: int


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """fashiongen/evaluation/critic.py -> fashiongen.evaluation.critic; a package's __init__.py -> the package."""
    parts = [PACKAGE, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_source_module(module: str, package_dir: Path = PACKAGE_DIR) -> bool:
    """Whether `module` (fashiongen.x.y) is a module or package of the source tree."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return False
    base = package_dir.joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_in(source: str, module: str, is_package: bool, is_module: Callable[[str], bool] = is_source_module,
               filename: str = "<source>") -> list[Import]:
    """Every import `source` can run, wherever it stands (module level, functions, methods, try blocks), as
    absolute module names. `from pkg import name` also counts pkg.name when that is a submodule."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def resolve(level: int, name: str | None) -> str:
        if level == 0:
            return name or ""
        parts = package.split(".")
        if level - 1 >= len(parts):
            raise ValueError(f"{filename}: relative import beyond the top of {module}")
        base = ".".join(parts[:len(parts) - (level - 1)])
        return f"{base}.{name}" if name else base

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test):
                # `if TYPE_CHECKING:` bodies never run (only type checkers read them); the else branch does.
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.extend(Import(alias.name, node.lineno) for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = resolve(node.level, node.module)
            found.append(Import(base, node.lineno))
            for alias in node.names:
                if alias.name != "*" and is_module(f"{base}.{alias.name}"):
                    found.append(Import(f"{base}.{alias.name}", node.lineno))

        def visit_Call(self, node: ast.Call) -> None:
            # importlib.import_module("fashiongen.x") with a literal name is an import too.
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
                found.append(Import(node.args[0].value, node.lineno))
            self.generic_visit(node)

    Visitor().visit(ast.parse(source, filename=filename))
    return found


def package_imports(package_dir: Path = PACKAGE_DIR) -> dict[str, list[tuple[Import, str]]]:
    """{importing module: [(fashiongen import, "file:line")]} for every .py file of the package."""
    result: dict[str, list[tuple[Import, str]]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        module = module_name(path, package_dir)
        where = path.relative_to(package_dir.parent).as_posix()
        imports = imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py",
                             lambda name: is_source_module(name, package_dir), filename=where)
        result[module] = [(item, f"{where}:{item.line}") for item in imports
                          if item.target == PACKAGE or item.target.startswith(PACKAGE + ".")]
    return result


def layer_problems(imports: dict[str, list[tuple[Import, str]]]) -> tuple[list[str], list[str]]:
    """(upward imports, modules without a layer) as readable lines."""
    upward: dict[tuple[str, str], list[str]] = {}
    unplaced: dict[str, str] = {}
    for module, items in imports.items():
        own = layer_of(module)
        if own is None:
            unplaced.setdefault(module, "a module of the package")
        for item, where in items:
            # The import also runs the target's parent packages; they sit in the target's layer or lower in
            # this table, but check them too so a misplaced package __init__ cannot hide.
            parts = item.target.split(".")
            for target in (".".join(parts[:end]) for end in range(len(parts), 0, -1)):
                layer = layer_of(target)
                if layer is None:
                    unplaced.setdefault(target, f"imported at {where}")
                elif own is not None and layer > own:
                    upward.setdefault((module, target), []).append(where)
                    break  # report the module actually named, not each of its parents
    lines = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})  [{', '.join(wheres)}]"
             for (module, target), wheres in sorted(upward.items())]
    missing = [f"{module} ({why}): add it to LAYERS in tests/test_layers.py"
               for module, why in sorted(unplaced.items())]
    return lines, missing


def test_the_walker_finds_lazy_relative_and_submodule_imports() -> None:
    """The walker itself, on a made-up module, so the layer test cannot pass by finding nothing."""
    source = textwrap.dedent("""
        from __future__ import annotations
        import os
        from typing import TYPE_CHECKING
        from . import pipeline
        from ..models import unet, MODELS
        if TYPE_CHECKING:
            from ..app import Studio
        else:
            from ..grid import image_grid

        class Exporter:
            def save(self):
                try:
                    from ..train.export import replacing_directory
                except ImportError:
                    import fashiongen.train.loop as loop

        def lazy():
            import importlib
            return importlib.import_module("fashiongen.jobs")
        """)
    submodules = {"fashiongen.evaluation.pipeline", "fashiongen.models.unet", "fashiongen.train.export"}
    found = imports_in(source, "fashiongen.evaluation.critic", is_package=False, is_module=submodules.__contains__)
    targets = [item.target for item in found]
    assert targets == ["__future__", "os", "typing", "fashiongen.evaluation", "fashiongen.evaluation.pipeline",
                       "fashiongen.models", "fashiongen.models.unet", "fashiongen.grid", "fashiongen.train.export",
                       "fashiongen.train.loop", "importlib", "fashiongen.jobs"], targets
    assert "fashiongen.app" not in targets  # under `if TYPE_CHECKING:` only
    assert found[targets.index("fashiongen.train.export")].line == 15

    # In a package's __init__.py, `from . import x` is relative to the package itself.
    found = imports_in("from . import service\nfrom .ui import build_demo\n", "fashiongen.app", is_package=True,
                       is_module={"fashiongen.app.service", "fashiongen.app.ui"}.__contains__)
    assert [item.target for item in found] == ["fashiongen.app", "fashiongen.app.service", "fashiongen.app.ui"]


def test_the_walker_sees_the_real_package() -> None:
    """A floor under the walker on the real tree: many modules, many fashiongen imports, some inside functions."""
    imports = package_imports()
    assert len(imports) > 30 and "fashiongen.pipeline" in imports
    assert sum(len(items) for items in imports.values()) > 100


def test_the_layer_table_places_modules_as_documented() -> None:
    assert layer_of("fashiongen") == 0 and layer_of("fashiongen.runs") == 0
    assert layer_of("fashiongen.data") == 1 and layer_of("fashiongen.data.records") == 1
    assert layer_of("fashiongen.train.__main__") == 5 and layer_of("fashiongen.evaluation.critic") == 3
    assert layer_of("fashiongen.something_new") is None and layer_of("fashiongen.pipelines") is None

    upward, unplaced = layer_problems({
        "fashiongen.pipeline": [(Import("fashiongen.train.export", 3), "fashiongen/pipeline.py:3"),
                                (Import("fashiongen.models.unet", 4), "fashiongen/pipeline.py:4")],
        "fashiongen.something_new": [(Import("fashiongen.utils", 1), "fashiongen/something_new.py:1")],
    })
    assert upward == [("fashiongen.pipeline (layer 3) imports fashiongen.train.export (layer 5)"
                       "  [fashiongen/pipeline.py:3]")]
    assert unplaced == ["fashiongen.something_new (a module of the package): add it to LAYERS in tests/test_layers.py"]


def test_every_import_points_down_the_layers() -> None:
    upward, unplaced = layer_problems(package_imports())
    message = []
    if upward:
        message += [f"{len(upward)} import(s) point up the layers (a module may import its own layer or lower):",
                    *upward]
    if unplaced:
        message += ["modules without a layer (place each in LAYERS on purpose):", *unplaced]
    assert not message, "\n".join(message)


# Runs in a fresh interpreter: records, for each module loaded, the module whose code imported it (the first
# frame outside importlib when a finder is asked for it), then imports each entry point in turn and reports, per
# forbidden package, the modules of it that the entry loaded and one chain of importers.
PROBE = r"""
import json, sys

FORBIDDEN = ("fashiongen.train", "accelerate")
parents = {}

class RecordParent:
    def find_spec(self, name, path=None, target=None):
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
            frame = frame.f_back
        # Last writer wins: a module is looked up once more to be loaded after any availability probe.
        parents[name] = frame.f_globals.get("__name__", "?") if frame is not None else "?"
        return None

sys.meta_path.insert(0, RecordParent())

def chain(name):
    links = [name]
    while links[-1] in parents and parents[links[-1]] not in links and len(links) < 60:
        links.append(parents[links[-1]])
    return " <- ".join(links)

report = {}
for entry in sys.argv[1:]:
    before = set(sys.modules)
    __import__(entry)
    new = set(sys.modules) - before
    for package in FORBIDDEN:
        loaded = sorted(name for name in new if name == package or name.startswith(package + "."))
        if loaded:
            report.setdefault(package, {})[entry] = {"loaded": loaded, "chain": chain(loaded[0])}
print(json.dumps(report))
"""


def entry_points() -> list[str]:
    evaluation = sorted(f"fashiongen.evaluation.{path.stem}" for path in (PACKAGE_DIR / "evaluation").glob("*.py")
                        if path.stem not in ("__init__", "__main__"))
    return ["fashiongen.pipeline", "fashiongen.app", "fashiongen.evaluation", *evaluation]


@pytest.fixture(scope="module")
def inference_imports() -> dict[str, dict[str, dict]]:
    """{forbidden package: {entry point: {"loaded": [...], "chain": "module <- importer <- ..."}}}, one interpreter."""
    result = subprocess.run([sys.executable, "-c", PROBE, *entry_points()], cwd=PACKAGE_DIR.parent,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _loaded_message(package: str, found: dict[str, dict]) -> str:
    lines = [(f"importing the pipeline, the app and the evaluation must not load {package}; a module loaded by an "
              "earlier entry is listed only there (chains read: module <- the module that imported it):")]
    for entry, what in found.items():
        names = what["loaded"]
        if len(names) > 12:
            names = [*names[:3], f"... {len(names)} in all"]
        lines += [f"import {entry} loaded: {', '.join(names)}", f"    {what['chain']}"]
    return "\n".join(lines)


def test_loading_the_pipeline_app_and_evaluation_loads_no_training_code(inference_imports: dict) -> None:
    found = inference_imports.get("fashiongen.train", {})
    assert not found, _loaded_message("fashiongen.train", found)


def test_loading_the_pipeline_app_and_evaluation_loads_no_accelerate(inference_imports: dict) -> None:
    # Note: with accelerate installed, transformers.modeling_utils and diffusers' models import it themselves
    # (transformers 5.24, diffusers 0.42.1); the chain shows whether fashiongen.train or a library brought it.
    found = inference_imports.get("accelerate", {})
    assert not found, _loaded_message("accelerate", found)
