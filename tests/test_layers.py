"""The package's import contracts (shared/STYLE.md, "Imports point down the list"): import-linter
checks the `[tool.importlinter]` contracts of pyproject.toml (the layers, every module placed in one; no import
cycle between sibling modules at any depth; the pipeline, app and evaluation import neither fashiongen.train nor
accelerate), and a fresh interpreter checks that loading them at run time does not load either (a library such as
diffusers may import accelerate itself, which import-linter cannot see)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fashiongen

PACKAGE_DIR = Path(fashiongen.__file__).resolve().parent
PYPROJECT = PACKAGE_DIR.parent / "pyproject.toml"


def test_the_import_contracts_hold() -> None:
    """`lint-imports` on the contracts of pyproject.toml; its report (the offending import chains) is the message.
    In its own process: run in-process, its logging set-up broke caplog for the tests that followed on the worker."""
    section = PYPROJECT.read_text(encoding="utf-8").partition("[tool.importlinter]")[2]
    types = re.findall(r'^type = "(\w+)"', section, flags=re.MULTILINE)
    assert {"layers", "forbidden", "acyclic_siblings"} <= set(types), types
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), str(PYPROJECT), "--no-cache", "--no-logo"], cwd=PYPROJECT.parent,
                            capture_output=True, text=True, timeout=300)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    # A floor under the linter: it read the whole package and checked every contract.
    assert f"Contracts: {len(types)} kept, 0 broken." in report, report


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


@pytest.mark.slow  # a fresh interpreter importing torch, diffusers and gradio; import-linter checks our own imports fast
def test_loading_the_pipeline_app_and_evaluation_loads_no_training_code(inference_imports: dict) -> None:
    found = inference_imports.get("fashiongen.train", {})
    assert not found, _loaded_message("fashiongen.train", found)


@pytest.mark.slow
def test_loading_the_pipeline_app_and_evaluation_loads_no_accelerate(inference_imports: dict) -> None:
    # Note: with accelerate installed, transformers.modeling_utils and diffusers' models import it themselves
    # (transformers 5.24, diffusers 0.42.1); the chain shows whether fashiongen.train or a library brought it.
    found = inference_imports.get("accelerate", {})
    assert not found, _loaded_message("accelerate", found)
