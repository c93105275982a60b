"""The house: who may import whom, read from the sources (imports inside functions included)."""
import ast
import os

from conftest import ROOT

PACKAGES = ("model", "dataset", "loss", "optimizer", "scheduler", "faces", "trainer", "tools",
            "webapp")
ENTRY_POINTS = ("train", "test", "inference", "serve")
BASE = ("errors", "fileio", "registry", "version", "checks")  # plain modules every part may use
# what each part may import of the project, besides BASE and itself
ALLOWED = {
    "model": {"loss"},  # RECCE's loss builds on the reusable terms
    "loss": set(),
    "dataset": {"model"},  # the input spec's eval pipeline
    "optimizer": set(),
    "scheduler": set(),
    "faces": {"model", "dataset"},
    "trainer": {"model", "dataset", "loss", "optimizer", "scheduler"},
    "tools": {"model", "dataset", "loss", "optimizer", "scheduler", "faces", "trainer"},
    "entry": {"model", "dataset", "loss", "optimizer", "scheduler", "faces", "trainer", "webapp"},
    "webapp": {"model", "dataset", "faces"},  # the page of serve.py, over the Python API
}


def _part(relpath):
    head = relpath.split(os.sep)[0]
    if head in PACKAGES:
        return head
    name = os.path.splitext(head)[0]
    return "entry" if name in ENTRY_POINTS else name


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def _graph():
    ours = set(PACKAGES) | set(ENTRY_POINTS) | set(BASE)
    edges = {}
    for dirpath, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("tests", "__pycache__")
                   and not (rel == "." and d in ("runs", "data", "reproduction", "docs"))]
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                part = _part(os.path.relpath(path, ROOT))
                for mod in _imports(path):
                    if mod in ours:
                        target = "entry" if mod in ENTRY_POINTS else mod
                        if target != part:
                            edges.setdefault(part, set()).add((mod, os.path.relpath(path, ROOT)))
    return edges


def test_every_import_goes_down_the_house():
    wrong = []
    for part, targets in _graph().items():
        for mod, where in targets:
            if mod in BASE:
                continue
            if mod not in ALLOWED.get(part, set()):
                wrong.append(f"{where} imports {mod}")
    assert not wrong, wrong


def test_no_entry_point_imports_tools_and_no_circle():
    graph = {}
    for part, targets in _graph().items():
        graph[part] = {("entry" if m in ENTRY_POINTS else m) for m, _ in targets if m not in BASE}
    assert "tools" not in graph.get("entry", set())
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError(f"import circle: {' -> '.join(stack[stack.index(node):] + [node])}")
        if node in seen:
            return
        stack.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        stack.pop()
        seen.add(node)
    for node in graph:
        visit(node)


def test_the_viewer_and_the_default_face_detector_are_requirements():
    """`tensorboard --logdir runs` (README) and dlib, the default detector of videos and photos,
    install with requirements.txt, not only with the developers' file."""
    import importlib
    text = open(os.path.join(ROOT, "requirements.txt")).read()
    for package, module in (("tensorboard", "tensorboard"), ("dlib-bin", "dlib")):
        assert any(line.split(">=")[0].strip() == package for line in text.splitlines())
        importlib.import_module(module)


def _imported_names(path):
    """(module, name) for each ``from module import name`` of a file, and (module, None) for each
    ``import module``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield from ((node.module, a.name) for a in node.names)


def _sources():
    for part in PACKAGES + ("",):
        folder = os.path.join(ROOT, part)
        for f in sorted(os.listdir(folder)) if part == "" else []:
            if f.endswith(".py"):
                yield f, os.path.join(folder, f)
        for dirpath, dirs, files in os.walk(folder) if part else ():
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    yield os.path.relpath(path, ROOT), path


# tools that still import another tool: benchmark.py runs bench_video.py, bench_inference.py
# and bench_backends.py as its sub-commands, gpu_check.py runs gpu_bench.py's tables
NOT_YET_LIBRARIES = {("tools/benchmark.py", "tools.bench_video"),
                     ("tools/benchmark.py", "tools.bench_inference"),
                     ("tools/benchmark.py", "tools.bench_backends"),
                     ("tools/gpu_check.py", "tools.gpu_bench")}


def test_tools_import_libraries_never_each_other():
    """What two tools need lives in a library (faces, dataset, model, trainer, fileio, ...), not in
    one of them or in the tools package."""
    wrong, seen = [], set()
    for rel, path in _sources():
        if not rel.startswith("tools" + os.sep):
            continue
        for module, name in _imported_names(path):
            target = f"{module}.{name}" if module == "tools" and name else module
            if target.split(".")[0] == "tools":
                seen.add((rel, target))
                if (rel, target) not in NOT_YET_LIBRARIES:
                    wrong.append(f"{rel} imports {target}")
    assert not wrong, wrong
    assert NOT_YET_LIBRARIES <= seen, "an allowance above is no longer needed: remove it"


def test_no_module_imports_another_s_private_name():
    """``from x import _name`` across modules: what another module needs is public."""
    wrong = [f"{rel} imports {module}.{name}" for rel, path in _sources()
             for module, name in _imported_names(path)
             if name and name.startswith("_") and not name.startswith("__")]
    assert not wrong, wrong


def test_the_old_name_of_the_evaluation_report_warns_and_is_that_module():
    """trainer.testing, renamed trainer.evaluation_report, still imports for one release: with a
    DeprecationWarning, as the very module of the new name."""
    import importlib
    import sys

    import pytest

    import trainer.evaluation_report as report
    sys.modules.pop("trainer.testing", None)
    with pytest.warns(DeprecationWarning, match="renamed trainer.evaluation_report"):
        old = importlib.import_module("trainer.testing")
    assert old is report and old.run_test is report.run_test
