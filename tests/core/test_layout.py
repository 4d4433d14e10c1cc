"""The design card's import direction: app -> evaluation -> serving/training/retrieval -> ragtune."""

import ast
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


def test_datasets_folder_never_shadows_hugging_face_datasets():
    assert not (REPO / "datasets" / "__init__.py").exists()
    import datasets

    assert hasattr(datasets, "load_dataset"), datasets.__file__
