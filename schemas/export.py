"""Write the JSON Schema of every wire contract, for integrators who do not read Python.

The files under `schemas/json/` are committed, so a PLC or MES team can pin
them; a test fails when a model changes without them being regenerated.

    python -m schemas.export           # rewrite schemas/json/*.schema.json
    python -m schemas.export --check   # exit 1 if any file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from schemas.control import RetrainOutcome, RetrainRequest, WorkerHeartbeat
from schemas.deadletters import DeadLetter
from schemas.frames import FrameHeaders
from schemas.gate import GateReport
from schemas.manifest import ModelManifest
from schemas.verdicts import Verdict

JSON_DIR = Path(__file__).with_name("json")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: File stem -> model. A new contract is exported once it is listed here.
MODELS: Mapping[str, type[BaseModel]] = {
    "frame_headers": FrameHeaders,
    "verdict": Verdict,
    "dead_letter": DeadLetter,
    "model_manifest": ModelManifest,
    "retrain_request": RetrainRequest,
    "retrain_outcome": RetrainOutcome,
    "gate_report": GateReport,
    "worker_heartbeat": WorkerHeartbeat,
}


def render(models: Mapping[str, type[BaseModel]] = MODELS) -> dict[str, str]:
    """File name -> file text, deterministic (sorted keys, trailing newline) for clean diffs."""
    files = {}
    for stem, model in models.items():
        schema = {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode="serialization")}
        files[f"{stem}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the models say now."""
    stale = []
    for name, text in render().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(directory: Path = JSON_DIR) -> list[Path]:
    """Write every schema file into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    parser.add_argument("--dir", type=Path, default=JSON_DIR, help="output folder")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        for name in stale:
            print(f"out of date: {args.dir / name}", file=sys.stderr)
        return 1 if stale else 0
    for path in write(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
