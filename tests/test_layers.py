"""Imports run one way: a module may import its own package and packages of a LOWER layer, nothing else.

The layers follow the data flow. A stage package reads what the ones below give it (configs and models,
images, latency tables); what passes between stages at the same layer (a supernet checkpoint from
``train`` to ``search``, a search run to ``pruning``/``export``) passes as files, never as imports.

| layer | packages                       | gives the layers above                                      |
|-------|--------------------------------|-------------------------------------------------------------|
| 0     | ``_errors``, ``_version``,     | ``SlimformerError``, ``__version__``, lazy package exports  |
|       | ``_lazy``                      |                                                             |
| 1     | ``_io``, ``_validate``         | atomic writes, run directories, the cache folder / checks   |
|       |                                | of numbers from users (finite, typed, in range, size caps)  |
| 2     | ``supernet``, ``data``         | configs, spaces, models / loaders, the built-in set, evaluate |
| 3     | ``latency_lut``                | per-op tables and their prediction (priced supernet ops)    |
| 4     | ``search``, ``pruning``,       | the stages: a searched, pruned or trained model             |
|       | ``train``                      |                                                             |
| 5     | ``export``                     | folding, export, model cards, bench, serve                  |
| 6     | ``cli``, the package root      | the command and ``slimformer.load``/``create_model``        |
| 7     | ``__main__``                   | ``python -m slimformer``                                    |

Packages of one layer do not import each other (``supernet`` and ``data``; ``search``, ``pruning`` and
``train``). Below the top layer there are no function-level imports of another slimformer package (an
import belongs at the top of the module, where a reader sees what it needs) and no ``except ImportError``
around an import of slimformer's own parts (they are always installed; guards are for optional third-party
packages such as coremltools or fastapi). The top layer (``cli``, the root ``__init__``) may import lazily
inside functions, so that ``import slimformer`` and ``slimformer --help`` stay fast.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slimformer

LAYERS = {
    "_errors": 0, "_version": 0, "_lazy": 0,
    "_io": 1, "_validate": 1,
    "supernet": 2, "data": 2,
    "latency_lut": 3,
    "search": 4, "pruning": 4, "train": 4,
    "export": 5,
    "cli": 6, "": 6,  # "": the package root (slimformer/__init__.py)
    "timm": 6,  # slimformer.timm: importing it registers the models with timm's registry
    "__main__": 7,  # `python -m slimformer`: runs the CLI
}
TOP = LAYERS["cli"]  # from here up, imports inside functions are allowed (lazy, for a fast start)
ROOT = Path(slimformer.__file__).parent
MODULES = sorted(ROOT.rglob("*.py"))


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of ``path`` (below the package folder ``root``) and whether it is a package ``__init__``."""
    parts = ("slimformer", *path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def part_of(dotted: str) -> str:
    """The layer-table entry of a slimformer module: ``slimformer.search._api`` -> ``search``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool) -> list[str]:
    """The slimformer modules an import statement reaches (absolute, dotted)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "slimformer"]
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    if target.split(".")[0] != "slimformer":
        return []
    if target == "slimformer":  # `from .. import latency_lut` names subpackages; `from .. import x` the root
        return [f"slimformer.{a.name}" if a.name in LAYERS else "slimformer" for a in node.names]
    return [target]


def _imports(path: Path, root: Path):
    """(line, target module, inside a function, inside a try with an ImportError handler) of each import."""
    module, is_pkg = _module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node, in_func: bool, guarded: bool):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend((node.lineno, t, in_func, guarded) for t in _targets(node, module, is_pkg))
        in_func = in_func or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.Try):
            catches = any(_catches_import_error(h.type) for h in node.handlers)
            for child in node.body:
                visit(child, in_func, guarded or catches)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, in_func, guarded)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, in_func, guarded)

    visit(tree, False, False)
    return module, found


def _catches_import_error(t) -> bool:
    if t is None:
        return True  # a bare except
    names = [e.id if isinstance(e, ast.Name) else getattr(e, "attr", "") for e in
             (t.elts if isinstance(t, ast.Tuple) else [t])]
    return bool({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"} & set(names))


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """One line per forbidden import in the module at ``path``."""
    module, found = _imports(path, root)
    here = part_of(module)
    rel = path.relative_to(root.parent)
    out = []
    for line, target, in_func, guarded in found:
        there = part_of(target)
        if guarded:
            out.append(f"{rel}:{line}: `except ImportError` around {target}, a part of slimformer itself")
        if there == here:
            continue
        if there not in LAYERS:
            out.append(f"{rel}:{line}: imports {target}, which has no layer (add it to LAYERS)")
        elif LAYERS[there] >= LAYERS[here]:
            kind = "a package of the same layer" if LAYERS[there] == LAYERS[here] else "a package above it"
            out.append(f"{rel}:{line}: {here or 'the root'} (layer {LAYERS[here]}) imports {target}, {kind} "
                       f"(layer {LAYERS[there]})")
        elif in_func and LAYERS[here] < TOP:
            out.append(f"{rel}:{line}: function-level import of {target}; import it at the top of the module")
    return out


def test_every_package_has_a_layer():
    parts = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in MODULES}
    parts = {"" if p == "__init__" else p for p in parts}
    assert parts <= set(LAYERS), f"packages without a layer: {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downwards(path):
    assert violations(path) == []


def test_the_checker_catches_what_it_forbids(tmp_path):
    """The rule has teeth: an upward, a sideways, a function-level and a guarded import are each reported."""
    fake = tmp_path / "slimformer"
    (fake / "search").mkdir(parents=True)
    (fake / "supernet").mkdir()
    src = fake / "search" / "_x.py"
    src.write_text("from ..export import load\nfrom ..pruning import prune_supernet\nfrom ..supernet import Supernet\n"
                   "def f():\n    from ..latency_lut import get_table\n"
                   "try:\n    from ..data import evaluate\nexcept ImportError:\n    evaluate = None\n")
    low = fake / "supernet" / "_y.py"
    low.write_text("from ..train import train_supernet\nfrom .._io import read_json\nfrom . import _config\n")
    found = violations(src, fake)
    assert len(found) == 4, found
    assert "a package above it" in found[0] and "same layer" in found[1]
    assert "function-level" in found[2] and "except ImportError" in found[3] and "data" in found[3]
    assert violations(low, fake) == [("slimformer/supernet/_y.py:1: supernet (layer 2) imports slimformer.train, "
                                      "a package above it (layer 4)")]
