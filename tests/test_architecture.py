"""The library's shape, as the README's Architecture section draws it: one package per stage, a
core under them, coqui-tts behind one adapter, no import cycles, functions that fit a screen."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from voicebook.core.paths import REPO_ROOT

LIB = REPO_ROOT / "lib"
PACKAGE = LIB / "voicebook"
MAX_FUNCTION_LINES = 60

# Layers, bottom up. A module may import its own layer's modules and any layer below it.
CORE = {"core"}
ADAPTERS = {"coqui", "asr", "speaker"}  # third-party seams: coqui-tts, faster-whisper, resemblyzer
# What several stages share, under them all: voices and reference clips (``voices``), and how a
# model is judged (``measures``: takes, CER, Distill-MOS, failure flags, intervals, verdicts).
SHARED = {"voices", "measures"}
STAGES = {"dataprep", "training", "voice_search", "evaluation", "decision"}
ENTRY = {"cli", "runner", "kernel", "sweep"}
LAYERS = [CORE, ADAPTERS, SHARED, STAGES, ENTRY]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The voicebook modules an import statement names (a package when nothing finer)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            is_package = MODULES[module].name == "__init__.py"
            parent = module.split(".")[: len(module.split(".")) - node.level + is_package]
            base = ".".join([*parent, *([node.module] if node.module else [])])
        names = [f"{base}.{a.name}" for a in node.names]
    found = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.startswith("voicebook"):
            found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every import between voicebook modules, those inside functions included."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[module].update(t for t in _imported(module, node) if t != module)
    # A package's __init__ re-exporting its own modules is not an arrow back into it.
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    top = _top(module)
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add its package to tests/test_architecture.py")


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert len(graph) > 80  # the whole library was read
    assert _cycles(graph) == []


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen from the packages: an arrow wherever one of a package's modules
    imports another package's module."""
    packages: dict[str, set[str]] = {_top(m): set() for m in graph if m != "voicebook"}
    for module, targets in graph.items():
        for target in targets:
            if module != "voicebook" and target != "voicebook" and _top(target) != _top(module):
                packages[_top(module)].add(_top(target))
    return packages


def test_the_package_graph_has_no_cycles():
    """Packages do not import each other in circles either (a circle of packages can hide in
    an acyclic module graph: training.export -> voices, voice_search.search -> training.*)."""
    packages = package_graph(import_graph())
    assert {"evaluation", "training", "voices"} <= packages["voice_search"] | packages["decision"]
    assert _cycles(packages) == []
    circle = {"training.export": {"voice_search.voices"}, "voice_search.search": {"training.x"},
              "voice_search.voices": set(), "training.x": set()}  # fmt: skip
    circle = {f"voicebook.{m}": {f"voicebook.{t}" for t in ts} for m, ts in circle.items()}
    assert _cycles(package_graph(circle)) == [["training", "voice_search"]]


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_imports_point_down_the_layers():
    """core imports nothing above it; the adapters (coqui-tts behind ``coqui``) import only core;
    the shared layer (``voices``, ``measures``) core and the adapters; the stages those and
    each other (acyclic, as packages too); the entry points import all."""
    wrong = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        if m != "voicebook"
        for t in targets
        if t != "voicebook" and _layer(t) > _layer(m)
    ]
    assert wrong == []


def test_every_package_is_in_a_layer():
    tops = {_top(m) for m in MODULES if m != "voicebook"}
    assert tops == set().union(*LAYERS)


def test_no_function_is_longer_than_a_screen():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert long == []


def test_the_readme_architecture_section_matches_the_tree():
    """The README draws the packages; every package it names exists and every package is named."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"## Architecture\n.*?```\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md has no '## Architecture' section with a drawing"
    named = set(re.findall(r"\b([a-z_]+)/", match.group(1)))
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages <= named
    assert named - packages <= {"lib", "voicebook", "notebooks", "listening"}


@pytest.mark.parametrize("value, alarming", [(0.0399, False), (0.04, True), (0.05, True)])
def test_training_and_decision_share_the_text_ce_alarm_edge(value, alarming):
    from voicebook.decision.matrix import CandidateEvidence, decide
    from voicebook.training.health import HealthMonitor

    monitor = HealthMonitor(patience_steps=100, lr_floor=0.0, best_eval=None)
    monitor.on_train(1, mel_ce=5.0, lr=1e-5, grad_norm=1.0)
    raised = any(e.kind == "text_ce_alarm" for e in monitor.on_eval(1, 5.0, value))
    base = CandidateEvidence("base", "base", mel_ce=6.0, text_ce=0.02, source="evaluation")
    tuned = CandidateEvidence("phase1", "phase 1", mel_ce=2.4, text_ce=value, source="evaluation")
    disqualified = decide([base, tuned]).verdicts[1].status == "disqualified"
    assert raised == disqualified == alarming


def _stage_configs():
    from voicebook import dataprep, training
    from voicebook.evaluation.scoring import EvalConfig
    from voicebook.voice_search.search import SearchConfig

    return [
        (dataprep.DataPrepConfig, {"min_seconds": 0.1}),
        (training.Phase1Config, {"finetune": "everything"}),
        (training.Phase2Config, {"finetune": "everything"}),
        (SearchConfig, {"method": "guess"}),
        (EvalConfig, {"eval_batch_size": 0}),
    ]


def test_every_stage_config_follows_one_convention():
    """One convention: a dataclass named ``…Config`` that validates in ``__post_init__`` (a bad
    value fails when the notebook builds it) and serialises with ``to_dict``."""
    import dataclasses
    import json

    for cls, bad in _stage_configs():
        assert dataclasses.is_dataclass(cls) and cls.__name__.endswith("Config")
        assert json.loads(json.dumps(cls().to_dict()))  # plain JSON values
        with pytest.raises(ValueError):
            cls(**bad)


@pytest.mark.parametrize("name", ["curves_figure", "declared_parameters", "read_record"])
def test_one_function_for_one_job(name):
    """One curves figure, one reader of a notebook's parameters, one reader of a JSON record:
    every stage uses it instead of a look-alike of its own."""
    where = [
        module
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    assert len(where) == 1, where
