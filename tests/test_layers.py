"""The package's layers: the networks in mespot/models/ are plain torch, usable without
Lightning or the training loop; Lightning and the run-time sit above them, never below."""

import ast
from pathlib import Path

import mespot

PACKAGE = Path(mespot.__file__).parent
# what a network may build on: torch, the input layout, the warm-up's gate, the error type
NETWORK_MAY_IMPORT = ("mespot.models", "mespot.data.inputs", "mespot.warmup", "mespot.errors")
NEVER_IN_NETWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf")


def imports(path: Path) -> set[str]:
    """The modules a file imports, as written."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_networks_import_only_torch_and_their_own_kind():
    files = [*PACKAGE.glob("models/*.py"), PACKAGE / "warmup.py", PACKAGE / "data/inputs.py"]
    wrong = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in files
        for name in imports(path)
        if name.startswith(NEVER_IN_NETWORKS)
        or (name.startswith("mespot") and not name.startswith(NETWORK_MAY_IMPORT))
    }
    assert not wrong, sorted(wrong)
