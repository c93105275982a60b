"""The house: who may import whom, read from the sources (imports inside functions included):
between the parts of the project, and between its modules (no circle, no private name taken)."""
import ast
import os
import shutil

import pytest

from helpers import ROOT

PACKAGES = ("model", "dataset", "loss", "optimizer", "scheduler", "faces", "trainer", "tools",
            "webapp", "benchmarks", "experiments")
ENTRY_POINTS = ("train", "test", "inference", "serve")
BASE = ("errors", "fileio", "registry", "version", "checks")  # plain modules every part may use
LIBRARIES = frozenset({"model", "dataset", "loss", "optimizer", "scheduler", "faces", "trainer"})
# what each part may import of the project, besides BASE and itself
ALLOWED = {
    "model": {"loss"},  # RECCE's loss builds on the reusable terms
    "loss": set(),
    "dataset": {"model"},  # the input spec's eval pipeline
    "optimizer": set(),
    "scheduler": set(),
    "faces": {"model", "dataset"},
    "trainer": {"model", "dataset", "loss", "optimizer", "scheduler"},
    # the measurements (tools/benchmark.py's sub-commands) and the experiments (the paper's
    # tables, the robustness grid): over the libraries, which never import them
    "benchmarks": LIBRARIES,
    "experiments": LIBRARIES,
    # the command-line tools: thin shells over the libraries, the measurements and experiments
    "tools": LIBRARIES | {"benchmarks", "experiments"},
    "entry": LIBRARIES | {"webapp"},
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
            circle = stack[stack.index(node):] + [node]
            raise AssertionError(f"import circle: {' -> '.join(circle)}")
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


def test_tools_import_libraries_never_each_other():
    """What two tools need lives in a library (faces, dataset, model, trainer, fileio, benchmarks,
    experiments, ...), not in one of them or in the tools package."""
    wrong = []
    for rel, path in _sources():
        if not rel.startswith("tools" + os.sep):
            continue
        for module, name in _imported_names(path):
            target = f"{module}.{name}" if module == "tools" and name else module
            if target.split(".")[0] == "tools":
                wrong.append(f"{rel} imports {target}")
    assert not wrong, wrong


def test_the_house_rules_see_a_wrong_import(tmp_path, monkeypatch):
    """The checker itself: a library importing the measurements, and a tool importing a tool, are
    both caught."""
    import test_layering as house
    for part in ("model", "tools", "benchmarks"):
        (tmp_path / part).mkdir()
    (tmp_path / "model" / "a.py").write_text("from benchmarks.timing import median_time\n")
    (tmp_path / "tools" / "b.py").write_text("from tools import export\n")
    (tmp_path / "benchmarks" / "c.py").write_text("import model\n")
    monkeypatch.setattr(house, "ROOT", str(tmp_path))
    assert house._graph() == {"model": {("benchmarks", os.path.join("model", "a.py"))},
                              "benchmarks": {("model", os.path.join("benchmarks", "c.py"))}}
    with pytest.raises(AssertionError, match="model/a.py imports benchmarks"):
        house.test_every_import_goes_down_the_house()
    with pytest.raises(AssertionError, match="tools/b.py imports tools.export"):
        house.test_tools_import_libraries_never_each_other()


# ------------------------------------------------------------------ the graph of modules
NOT_SOURCES = ("tests", "runs", "data", "reproduction", "docs")  # top-level folders left out


def project_modules(root):
    """{dotted name: (path, is a package's __init__)} of every module of the project under
    ``root``: the plain modules and entry points at the top and the packages' modules (a folder
    without ``__init__.py``, such as trainer/, is a namespace package); tests/ is left out."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__"
                         and not (rel == "." and d in NOT_SOURCES))
        parts = [] if rel == "." else rel.split(os.sep)
        for f in sorted(files):
            if f.endswith(".py"):
                name = f[:-3]
                module = ".".join(parts + ([] if name == "__init__" else [name]))
                found[module] = (os.path.join(dirpath, f), name == "__init__")
    return found


def module_imports(root):
    """(importer, module, name, where) for every import of every project module, function-local
    ones included: ``import a.b`` gives (importer, "a.b", None); ``from a import b`` gives
    (importer, "a.b", None) where a.b is a module, else (importer, "a", "b"). Relative imports
    (``from .x import y``, ``from .. import z``) are resolved against the importer's package.
    Only imports of project modules are given."""
    modules = project_modules(root)
    for importer, (path, is_package) in modules.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        where = os.path.relpath(path, root)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # 1: the importer's package, 2: the one above, ...
                    package = importer.split(".") if is_package else importer.split(".")[:-1]
                    package = package[:len(package) - node.level + 1]
                    base = ".".join(package + ([node.module] if node.module else []))
                found = []
                for a in node.names:
                    sub = f"{base}.{a.name}" if base else a.name
                    found.append((sub, None) if sub in modules else (base, a.name))
            else:
                continue
            for module, name in found:
                if module in modules:
                    yield importer, module, name, f"{where}:{node.lineno}"


def module_graph(root):
    """{importer: {imported module: where}} between the project's modules."""
    graph = {}
    for importer, module, _, where in module_imports(root):
        if module != importer:
            graph.setdefault(importer, {}).setdefault(module, where)
    return graph


def find_circle(graph):
    """One import circle of ``graph`` as [a, b, ..., a], or None."""
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            circle = visit(nxt)
            if circle:
                return circle
        path.pop()
        done.add(node)
        return None
    for node in sorted(graph):
        circle = visit(node)
        if circle:
            return circle
    return None


def test_no_import_circle_between_modules(root=ROOT):
    """No module imports, through any chain of imports (relative ones and those inside functions
    too), a module that imports it."""
    graph = module_graph(root)
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(
        f"{a} ({graph[a][b]})" for a, b in zip(circle, circle[1:])) + f" -> {circle[-1]}"


def test_no_module_imports_another_s_private_name(root=ROOT):
    """``from x import _name`` (relative or absolute) across modules: what another module needs
    is public."""
    wrong = [f"{where} imports {module}.{name}" for importer, module, name, where
             in module_imports(root)
             if name and name.startswith("_") and not name.startswith("__") and module != importer]
    assert not wrong, wrong


def _copy_sources(root, dest):
    """The project's Python sources copied into ``dest`` (what the checks above read)."""
    for module, (path, _) in project_modules(root).items():
        target = os.path.join(dest, os.path.relpath(path, root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)


def _plant(dest, rel, line):
    with open(os.path.join(dest, rel), "a", encoding="utf-8") as fh:
        fh.write(f"\n\ndef _planted():\n    {line}\n")


@pytest.mark.slow
def test_the_checks_find_a_planted_circle_and_a_planted_private_import(tmp_path):
    """A copy of the project passes both checks; a relative import inside a function that closes
    a circle (trainer/logs.py -> trainer/train.py, which imports it) fails the first, naming
    it; a relative import of a private name fails the second."""
    clean = tmp_path / "clean"
    _copy_sources(ROOT, clean)
    test_no_import_circle_between_modules(clean)
    test_no_module_imports_another_s_private_name(clean)

    circle = tmp_path / "circle"
    _copy_sources(ROOT, circle)
    _plant(circle, os.path.join("trainer", "logs.py"), "from .train import Trainer")
    with pytest.raises(AssertionError, match=r"import circle: .*trainer\.logs \(trainer/logs\.py:"
                                             r"\d+\) -> trainer\.train"):
        test_no_import_circle_between_modules(circle)
    test_no_module_imports_another_s_private_name(circle)

    private = tmp_path / "private"
    _copy_sources(ROOT, private)
    _plant(private, os.path.join("trainer", "train.py"), "from .evaluate import _keep_examples")
    with pytest.raises(AssertionError, match=r"trainer/train\.py:\d+ imports "
                                             r"trainer\.evaluate\._keep_examples"):
        test_no_module_imports_another_s_private_name(private)
    test_no_import_circle_between_modules(private)


def test_relative_imports_resolve_to_their_module(tmp_path):
    """``from .x import y``, ``from . import x`` and ``from ..x import y`` name the module they
    import, from a package's module, its __init__ and a sub-package; a folder without
    __init__.py is a package too."""
    files = {"pkg/__init__.py": "from .a import f\n",
             "pkg/a.py": "from . import b\n\n\ndef f():\n    from .sub.c import g\n",
             "pkg/b.py": "",
             "pkg/sub/c.py": "from ..b import _hidden\nfrom .. import a\nimport pkg.b\n",
             "top.py": "from pkg import a\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert {(i, m, n) for i, m, n, _ in module_imports(tmp_path)} == {
        ("pkg", "pkg.a", "f"), ("pkg.a", "pkg.b", None), ("pkg.a", "pkg.sub.c", "g"),
        ("pkg.sub.c", "pkg.b", "_hidden"), ("pkg.sub.c", "pkg.a", None),
        ("pkg.sub.c", "pkg.b", None), ("top", "pkg.a", None)}
    with pytest.raises(AssertionError, match=r"pkg\.a \(pkg/a\.py:5\) -> pkg\.sub\.c "
                                             r"\(pkg/sub/c\.py:2\) -> pkg\.a"):
        test_no_import_circle_between_modules(tmp_path)
    with pytest.raises(AssertionError, match=r"pkg/sub/c\.py:1 imports pkg\.b\._hidden"):
        test_no_module_imports_another_s_private_name(tmp_path)


def test_the_old_name_of_the_evaluation_report_warns_and_is_that_module():
    """trainer.testing, renamed trainer.evaluation_report, still imports for one release: with a
    DeprecationWarning, as the very module of the new name."""
    import importlib
    import sys

    import trainer.evaluation_report as report
    sys.modules.pop("trainer.testing", None)
    with pytest.warns(DeprecationWarning, match="renamed trainer.evaluation_report"):
        old = importlib.import_module("trainer.testing")
    assert old is report and old.run_test is report.run_test
