"""The code's layers, and the wire contracts in one place, checked on the source with `ast`.

Layers: `schemas` (the contracts) imports no kenpin package; the worker never
imports the trainer; the trainer uses of the worker only the model
(`worker.model.*`), the plane clients (`worker.control`, `worker.storage`) and
the shared logging (`worker.logs`); the model package, which the trainer
imports, stays self-contained; nothing in `worker` or `trainer` imports
`deploy`.

Contracts: topic names, Redis keys and S3 prefixes are written once, in
`schemas.topics`, `schemas.redis_keys` and `schemas.object_layout`; a string
literal holding one anywhere else (docstrings and comments aside) is a second
copy that will drift.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: What the trainer may import of the worker: the model, the plane clients, logging, and
#: the metrics-and-probes HTTP server.
TRAINER_MAY_IMPORT = (
    "worker.model",
    "worker.control",
    "worker.storage",
    "worker.logs",
    "worker.http_endpoints",
)

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


def test_the_trainer_uses_only_the_model_the_plane_clients_and_logging_of_the_worker():
    found = violations(
        ("trainer",),
        lambda m: (
            within(m, "worker")
            and m != "worker"
            and not any(within(m, allowed) for allowed in TRAINER_MAY_IMPORT)
        ),
    )
    assert not found, "\n".join(found)


def test_the_worker_never_imports_the_trainer():
    assert not (found := violations(("worker",), lambda m: within(m, "trainer"))), "\n".join(found)


def test_the_model_package_is_self_contained():
    """The trainer imports worker.model: it must not drag the worker's service in with it."""
    found = violations(
        ("worker/model",),
        lambda m: within(m, "worker") and not within(m, "worker.model") and m != "worker",
    )
    assert not found, "\n".join(found)


def test_nothing_in_worker_or_trainer_imports_deploy():
    found = violations(("worker", "trainer"), lambda m: within(m, "deploy"))
    assert not found, "\n".join(found)


#: What the console may import of the worker and the trainer: the plane clients, logging,
#: and the trainer's service functions the operator commands are made of.
CONSOLE_MAY_IMPORT = (
    "worker.control",
    "worker.storage",
    "worker.kafka_io",
    "worker.logs",
    "trainer.service",
)


def test_the_console_uses_only_the_plane_clients_and_the_operator_functions():
    found = violations(
        ("console",),
        lambda m: (
            (
                (within(m, "worker") or within(m, "trainer"))
                and m not in ("worker", "trainer")
                and not any(within(m, allowed) for allowed in CONSOLE_MAY_IMPORT)
            )
            or within(m, "deploy")
            or within(m, "bridge")
        ),
    )
    assert not found, "\n".join(found)


def test_nothing_imports_the_console():
    others = tuple(p for p in packages() if p != "console")
    found = violations(others, lambda m: within(m, "console"))
    assert not found, "\n".join(found)


def test_the_bridge_imports_only_the_contracts():
    """The PLC bridge runs beside the PLCs: nothing of the worker, trainer or console with it."""
    others = [p for p in packages() if p not in ("bridge", "schemas")]
    found = violations(("bridge",), lambda m: any(within(m, p) for p in others))
    assert not found, "\n".join(found)


def test_schemas_import_no_kenpin_package():
    others = [p for p in packages() if p != "schemas"]
    found = violations(("schemas",), lambda m: any(within(m, p) for p in others))
    assert not found, "\n".join(found)


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
        "from worker.model.images import load_image\n"
        "from . import releases\n"
        "from ..worker import kafka_io\n"
        "def f():\n    from worker.normals import normal_key\n"
    )
    modules = sorted(m for _, m in imported_modules(path, package="trainer.sub"))
    assert modules == [
        "trainer.sub.releases",
        "trainer.worker.kafka_io",
        "worker.decode",
        "worker.hot_swap",
        "worker.model.images.load_image",
        "worker.normals.normal_key",
    ]
