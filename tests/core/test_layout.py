"""The design card's import direction: app -> evaluation -> serving/training/retrieval -> ragtune.

Nothing imports a layer above it, not even by string: no ``"module:NAME"`` or ``"-m module"`` naming one,
and no ``importlib.import_module`` / ``__import__`` of a name computed at run time (a job record used to
hold ``"app.training_data:SYNTH"`` and the core imported it; the app's registry, ``app.wiring``, now
hands the core its operations).
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {"ragtune", "retrieval", "training", "serving", "evaluation", "app"}
ALLOWED = {
    "ragtune": {"ragtune"},
    "retrieval": {"ragtune", "retrieval"},
    "training": {"ragtune", "training"},
    "serving": {"ragtune", "serving"},
    "evaluation": {"ragtune", "retrieval", "training", "serving", "evaluation"},
    "app": OURS,
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package):
    offenders = {}
    for path in (REPO / package).rglob("*.py"):
        bad = imported_packages(path) - ALLOWED[package]
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert not offenders, f"{package} may only import {sorted(ALLOWED[package])}: {offenders}"


# a whole string naming a module of ours: "app.wiring", "app.training_data:SYNTH", "evaluation.job"
MODULE_REF = re.compile(r"^(?P<package>[a-z_]+)(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?$")
DYNAMIC_IMPORTS = {"import_module", "__import__", "run_module", "find_spec"}


def string_references(path: Path) -> dict[str, int]:
    """Each string constant (not a docstring's prose) that names a module of ours, with its line;
    and each import by a name computed at run time, under "<dynamic import>"."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = MODULE_REF.match(node.value)
            if match and match["package"] in OURS and ("." in node.value or ":" in node.value):
                found[node.value] = node.lineno
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in DYNAMIC_IMPORTS and not (node.args and isinstance(node.args[0], ast.Constant)):
                found[f"<dynamic import: {name}>"] = node.lineno
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_layer_names_a_layer_above_it_by_string(package):
    offenders = {}
    for path in (REPO / package).rglob("*.py"):
        for ref, line in string_references(path).items():
            target = MODULE_REF.match(ref)
            if package == "app" and target is None:
                continue  # the top layer may import what it computes: nothing lies above it
            if target is None or target["package"] not in ALLOWED[package]:
                offenders[f"{path.relative_to(REPO)}:{line}"] = ref
    assert not offenders, f"{package} may only name {sorted(ALLOWED[package])}: {offenders}"


def test_the_string_check_catches_a_module_ref_and_a_dynamic_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('''"""Docstring prose about app.wiring is not a reference."""
import importlib
REF = "app.training_data:SYNTH"
ARGV = ["-m", "app.jobs_entry"]
def load(ref):
    return importlib.import_module(ref.partition(":")[0])
def fine():
    return importlib.import_module("ragtune.jobs"), "see app.wiring for the registry"
''')
    assert set(string_references(sample)) == {"app.training_data:SYNTH", "app.jobs_entry",
                                              "<dynamic import: import_module>", "ragtune.jobs"}


def test_datasets_folder_never_shadows_hugging_face_datasets():
    assert not (REPO / "datasets" / "__init__.py").exists()
    import datasets

    assert hasattr(datasets, "load_dataset"), datasets.__file__


def test_a_job_process_starts_without_the_heavy_libraries():
    """Every job process imports the whole job registry (``app.jobs_entry``): none of its modules may pull in a
    library that only some operations use at run time (scipy alone cost each ingest job 0.6 s before it ran)."""
    import subprocess
    import sys

    heavy = ["scipy", "torch", "transformers", "sentence_transformers", "faiss", "gradio", "vllm", "pandas"]
    probe = f"import sys, app.jobs_entry; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"imported when a job process starts: {loaded.stdout.strip()}"
