"""The code's layers, and the wire contracts in one place, checked on the source with `ast`.

Layers: each top-level package imports only the rooms below it (`MAY_IMPORT`):
`schemas` (the contracts) nothing of kenpin; `planes` (the clients of Kafka,
Redis and S3, their settings, logging) the contracts; `model` the contracts;
`operations` (releases, retrain queue, normal store) the planes and the model's
torch-free modules; the worker, the trainer, the bridge and the console what
they use of those. Nothing but `deploy/` imports the worker, and neither the
console nor the bridge ever imports torch (checked on the running import, too).

Contracts: topic names, Redis keys and S3 prefixes are written once, in
`schemas.topics`, `schemas.redis_keys` and `schemas.object_layout`; a string
literal holding one anywhere else (docstrings and comments aside) is a second
copy that will drift.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The kenpin packages each package may import (besides itself); `deploy` may import all.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "schemas": (),
    "planes": ("schemas",),
    "model": ("schemas",),
    "operations": ("schemas", "planes", "model"),
    "worker": ("schemas", "planes", "model"),
    "trainer": ("schemas", "planes", "model", "operations"),
    "bridge": ("schemas", "planes"),
    "console": ("schemas", "planes", "operations"),
}
#: The model's modules that load no torch: all the operations may use of the model.
TORCH_FREE_MODEL = ("model.release", "model.judgement", "model.false_alarms")

#: Substrings that mark a topic name, a Redis key or an S3 key (regex escapes undone).
CONTRACT_LITERALS = (
    "kenpin.frames.",
    "kenpin.verdicts.",
    "kenpin.deadletter",
    "kenpin:",  # every Redis key: kenpin:model:, kenpin:retrain, kenpin:trainer:, kenpin:worker:
    "kenpin-workers",
    "kenpin-trainers",
    "models/",
    "heatmaps/",
    "normals/",
    "manifest.json",
)
#: (file, literal) pairs that look like a contract and are not one.
NOT_CONTRACTS = {
    # the worker's local folders (a filesystem path, not an object key)
    ("worker/settings.py", "models/releases"),
    ("worker/settings.py", "models/current"),
}
#: Where the contracts live, and the tests (which spell them out on purpose).
CONTRACT_HOMES = ("schemas", "tests")


def python_files(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from sorted((REPO / root).rglob("*.py"))


def packages() -> list[str]:
    """The top-level packages of the repository (folders with an __init__.py)."""
    return sorted(
        p.parent.name
        for p in REPO.glob("*/__init__.py")
        if not p.parent.name.startswith(".") and not p.parent.name.endswith(".egg-info")
    )


def imported_modules(path: Path, package: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, nested ones included.

    `from a.b import c` yields `a.b.c` (c may be a module); relative imports are
    resolved against the file's package (`package`, else where the file lies).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parts = package.split(".") if package else path.relative_to(REPO).parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - node.level + 1])
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}" if alias.name != "*" else module


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def violations(roots: tuple[str, ...], forbidden) -> list[str]:
    found = []
    for path in python_files(*roots):
        for line, module in imported_modules(path):
            if forbidden(module):
                found.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return found


def test_every_package_has_its_layer():
    assert set(packages()) == {*MAY_IMPORT, "deploy"}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_the_rooms_below_it(package):
    allowed = (package, *MAY_IMPORT[package])
    kenpin = [p for p in packages() if p not in allowed]
    found = violations((package,), lambda m: any(within(m, p) for p in kenpin))
    assert not found, "\n".join(found)


def test_nothing_but_deploy_imports_the_worker():
    others = tuple(p for p in packages() if p not in ("worker", "deploy"))
    assert not (found := violations(others, lambda m: within(m, "worker"))), "\n".join(found)


def test_the_operations_use_only_the_torch_free_model():
    found = violations(
        ("operations", "console", "bridge"),
        lambda m: within(m, "model") and not any(within(m, ok) for ok in TORCH_FREE_MODEL),
    )
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "module", ["console.app", "console.cli", "bridge.cli", "bridge.relay", "operations.plant"]
)
def test_the_console_the_bridge_and_the_operations_never_load_torch(module):
    """Imported as its process imports it: torch (seconds of import, GBs of memory) stays out."""
    probe = f"import sys, {module}; print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"{module} loads {result.stdout.strip()}"


def docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (module, class, function)."""
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ) and (
            node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)
        ):
            nodes.add(id(node.body[0].value))
    return nodes


def contract_literals(path: Path) -> Iterator[tuple[int, str]]:
    """(line, literal) of the non-docstring string constants that hold a contract name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = docstring_nodes(tree)
    for node in ast.walk(tree):  # f-strings included: their literal parts are Constants
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            text = node.value.replace("\\.", ".")  # a regex of a topic is the topic
            if any(literal in text for literal in CONTRACT_LITERALS):
                yield node.lineno, node.value


def test_topic_names_redis_keys_and_s3_prefixes_are_written_only_in_schemas():
    found = []
    for package in packages():
        if package in CONTRACT_HOMES:
            continue
        for path in python_files(package):
            name = path.relative_to(REPO).as_posix()
            for line, literal in contract_literals(path):
                if (name, literal) not in NOT_CONTRACTS:
                    found.append(f"{name}:{line}: {literal!r}")
    for path in REPO.glob("*.py"):  # loose scripts at the top, if any
        found += [f"{path.name}:{line}: {lit!r}" for line, lit in contract_literals(path)]
    assert not found, "use the names in schemas.topics / redis_keys / object_layout:\n" + (
        "\n".join(found)
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('TOPIC = "kenpin.frames."', 1),
        ('PATTERN = r"^kenpin\\.frames\\..*"', 1),
        ('def f(line):\n    return f"heatmaps/{line}"', 1),
        ('def f():\n    """Writes `kenpin:model:current`."""\n    # kenpin:model:current', 0),
        ('X = 1\n"""kenpin:model:current, not in the docstring slot: code"""', 1),
    ],
)
def test_the_literal_check_sees_code_and_skips_docstrings(tmp_path, source, expected):
    path = tmp_path / "example.py"
    path.write_text(source)
    assert len(list(contract_literals(path))) == expected


def test_the_import_check_resolves_every_form(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(
        "import worker.hot_swap\n"
        "from worker import decode\n"
        "from model.images import load_image\n"
        "from . import releases\n"
        "from ..worker import kafka_io\n"
        "def f():\n    from worker.normals import normal_key\n"
    )
    modules = sorted(m for _, m in imported_modules(path, package="trainer.sub"))
    assert modules == [
        "model.images.load_image",
        "trainer.sub.releases",
        "trainer.worker.kafka_io",
        "worker.decode",
        "worker.hot_swap",
        "worker.normals.normal_key",
    ]
