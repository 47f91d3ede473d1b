"""The package's modules form layers, and imports run one way: from higher to lower.

A module may import any module below it. An import of a higher layer is allowed only
inside a function, and only where LAZY_WRAPPERS lists it with the reason it is worth it;
such an import runs when the function is called, so it cannot form an import circle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "backpack"

# lowest first; each module is exported from one notebook (see the README's table)
LAYERS = [
    "data",  # 01: corpus, tokenizers, token files
    "senses",  # 02: the sense network
    "attention",  # 03: causal attention and its backends
    "sums",  # 10: the sense sum, four ways (imports attention only)
    "weights",  # 04: the Transformer and the sense-weight network; config checks
    "model",  # 05: BackpackLM, TransformerLM
    "generation",  # 10b: generation with caches
    "checkpoint",  # 06: save/load, the book's trained models
    "train",  # 07: the training loop
    "runs",  # 07b: run folders, resume, the training command line
    "analysis",  # 08
    "interventions",  # 09
    "demo",  # 09b
    "browser",  # 09c: the page that runs a Backpack in the browser
    "bench",  # 10c: measuring; imported by nothing in the package
]
# the hand-written entry points sit above every layer
ENTRY_POINTS = {"__init__", "__main__"}

# (importer, imported): why a lower layer may call a higher one from inside a function
LAZY_WRAPPERS = {
    ("model", "generation"): (
        "LanguageModel.generate is the model's public way to generate; it calls "
        "generate_cached, which is built on the model"
    ),
    ("model", "checkpoint"): (
        "LanguageModel.save_pretrained / from_pretrained, the Hugging Face-style "
        "methods users expect on a model, call the checkpoint module"
    ),
    ("train", "runs"): (
        "`python -m backpack.train` runs the training command line, which lives in "
        "runs; the import sits in train's __main__ guard only"
    ),
}


def backpack_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported backpack module, whether the import is at the module's top level) for
    each
    import of a backpack module in the file."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .model import ...
                names = [node.module] if node.module else [a.name for a in node.names]
            elif node.module and (
                node.module == "backpack" or node.module.startswith("backpack.")
            ):
                rest = node.module.split(".")[1:]
                names = rest[:1] if rest else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [
                a.name.split(".")[1]
                for a in node.names
                if a.name.startswith("backpack.")
            ]
        for name in names:
            found.append((name.split(".")[0], id(node) in top_level))
    return found


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """One line per import of a higher layer that LAZY_WRAPPERS does not allow."""
    problems = []
    rank = {name: i for i, name in enumerate(LAYERS)}
    for path in sorted(package.glob("*.py")):
        me = path.stem
        if me in ENTRY_POINTS or me == "_modidx":
            continue
        assert me in rank, f"backpack/{path.name} is in no layer: add it to LAYERS"
        for other, top in backpack_imports(path):
            if other not in rank or rank[other] < rank[me]:
                continue
            if other == me:
                continue
            if top or (me, other) not in LAZY_WRAPPERS:
                where = (
                    "at the top"
                    if top
                    else "inside a function, not listed in LAZY_WRAPPERS"
                )
                problems.append(
                    f"backpack.{me} imports the higher layer backpack.{other} ({where})"
                )
    return problems


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - ENTRY_POINTS - {"_modidx"}
    assert modules == set(LAYERS), (
        f"in no layer: {sorted(modules - set(LAYERS))}; listed but missing: "
        f"{sorted(set(LAYERS) - modules)}"
    )


def test_imports_run_downwards_only():
    problems = upward_imports()
    assert not problems, "\n".join(problems)


def test_nothing_in_the_package_imports_the_benchmark():
    for path in PACKAGE.glob("*.py"):
        if path.stem not in ENTRY_POINTS:
            assert "bench" not in {name for name, _ in backpack_imports(path)}, (
                path.name
            )


def test_the_check_catches_an_upward_import(tmp_path):
    """The test above must fail on a module that imports a higher layer."""
    fake = tmp_path / "backpack"
    fake.mkdir()
    for name in LAYERS:
        (fake / f"{name}.py").write_text("")
    (fake / "model.py").write_text("from .train import TrainConfig\n")
    (fake / "weights.py").write_text(
        "def f():\n    from backpack.model import BackpackLM\n"
    )
    assert upward_imports(fake) == [
        "backpack.model imports the higher layer backpack.train (at the top)",
        "backpack.weights imports the higher layer backpack.model (inside a function, "
        "not listed in LAZY_WRAPPERS)",
    ]
