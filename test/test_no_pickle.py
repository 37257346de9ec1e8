"""No file this package reads can run code: weights are safetensors, configs JSON/YAML (safe_load),
graphs ONNX. The source holds no unpickling call (torch.load, pickle, numpy allow_pickle, ...)
and no pickling call that would write such a file; test_training_checkpoints.py checks that a
periodic checkpoint holds safetensors and JSON files only."""

from __future__ import annotations

import ast

from conftest import REPO, top_level_imports

SOURCES = sorted([*(REPO / "snapflow_ros").rglob("*.py"), *(REPO / "distill").rglob("*.py")])
PICKLING_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
# attribute calls that unpickle or pickle: (object name, attribute)
PICKLING_CALLS = {("torch", "load"), ("torch", "save"), ("jit", "load"), ("np", "load"), ("numpy", "load"),
                  ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load")}


def _calls(path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            yield node.lineno, name, node.func.attr, [k.arg for k in node.keywords]


def test_no_module_imports_a_pickler():
    found = {str(p.relative_to(REPO)): top_level_imports(p) & PICKLING_MODULES for p in SOURCES}
    assert not {k: v for k, v in found.items() if v}


def test_no_call_pickles_or_unpickles():
    found = [f"{p.relative_to(REPO)}:{line} {owner}.{attr}" for p in SOURCES
             for line, owner, attr, _ in _calls(p) if (owner, attr) in PICKLING_CALLS]
    assert not found, found


def test_the_scan_sees_what_it_looks_for(tmp_path):
    """The two scans above would see a torch.load or an import pickle if one were written."""
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nimport torch\nstate = torch.load('x', weights_only=False)\n")
    assert top_level_imports(sample) & PICKLING_MODULES == {"pickle"}
    assert [(owner, attr) for _, owner, attr, _ in _calls(sample)] == [("torch", "load")]
