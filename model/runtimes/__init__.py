"""Runtimes: what runs a release's network on the line, chosen by `KENPIN_RUNTIME`.

- `torch`: the network itself (`torch_engine`), on any device, fp32/bf16/fp16;
- `onnxruntime`: the release's `network.onnx` through ONNX Runtime (CPU, or the
  CUDA/TensorRT providers where they are installed);
- `openvino`: the same export through OpenVINO's CPU plugin (f32, or bf16 on CPUs
  with AMX/AVX512-BF16);
- `auto` (the worker's default): the one that serves fastest where the worker runs
  (`choose_runtime`): OpenVINO on a CPU, torch on CUDA.

An engine takes a batch of prepared frames, (N, S, S, 3) uint8 RGB, and returns
image scores (N,) and anomaly maps (N, S, S), float32 on the host: the whole
scoring path, so the worker needs nothing else. The export is made when the
release is made (`trainer.learning.export`), listed in the manifest with its
sha256, and checked against torch fp32 before it is served (`model.parity`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np

from model.judgement import Judgement

#: What runs a release's network on the line (`KENPIN_RUNTIME`).
Runtime = Literal["torch", "onnxruntime", "openvino"]
#: What `KENPIN_RUNTIME` accepts: a runtime, or "auto" for the fastest where it runs.
RuntimeChoice = Literal["auto", "torch", "onnxruntime", "openvino"]
#: Numeric precision of inference (torch: autocast; openvino: inference precision hint).
Precision = Literal["fp32", "bf16", "fp16"]
#: Where a process computes; "auto": CUDA when present, else the CPU.
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class RuntimeSpec:
    """What a runtime accepts, and what a benchmark of it measures by default."""

    precisions: tuple[Precision, ...]
    #: What `kenpin-trainer bench --runtime NAME` (no precision) measures.
    bench_precisions: tuple[Precision, ...]
    #: Runs the release's ONNX export (not the torch network itself).
    runs_export: bool


#: Every runtime, declared once: settings, command-line flags, the gate's parity check and
#: the benchmarks read their choices from here.
RUNTIMES: dict[Runtime, RuntimeSpec] = {
    "torch": RuntimeSpec(("fp32", "bf16", "fp16"), ("fp32", "bf16"), runs_export=False),
    "onnxruntime": RuntimeSpec(("fp32", "fp16"), ("fp32",), runs_export=True),
    "openvino": RuntimeSpec(("fp32", "bf16"), ("fp32", "bf16"), runs_export=True),
}
assert set(RUNTIMES) == set(get_args(Runtime)), "every Runtime has its RuntimeSpec"
assert set(get_args(RuntimeChoice)) == {"auto", *RUNTIMES}, "every Runtime can be chosen"
#: The runtimes of the ONNX export: what the release gate checks it through.
EXPORT_RUNTIMES: tuple[Runtime, ...] = tuple(n for n, s in RUNTIMES.items() if s.runs_export)
#: Every precision some runtime accepts.
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

#: The ONNX export's name inside a release (beside the weights, listed in the manifest).
ONNX_FILE = "network.onnx"
#: Names of release files that are compiled exports, not tensors: verified by sha256
#: like every file, but read by a runtime rather than loaded as weights.
EXPORT_FILES = frozenset({ONNX_FILE})


class Engine(Protocol):
    """A compiled or eager network: uint8 frames in, a `Judgement` of float32 arrays out."""

    runtime: str
    precision: str

    def __call__(self, frames: np.ndarray) -> Judgement[np.ndarray]: ...


def check_choice(runtime: str, precision: str) -> None:
    """ValueError unless `runtime` is known and runs at `precision` ("auto": any precision)."""
    if runtime == "auto" and precision in PRECISIONS:
        return
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}, not {runtime!r}")
    accepted = RUNTIMES[runtime].precisions  # type: ignore[index]
    if precision not in accepted:
        raise ValueError(f"runtime {runtime} runs at {list(accepted)}, not {precision!r}")


def choose_runtime(choice: str, device_type: str, precision: str) -> Runtime:
    """`choice`, or for "auto" the runtime that serves fastest on `device_type` at `precision`.

    On a CPU that is OpenVINO, where it is installed and runs `precision`: it runs each
    frame of a batch as its own request over the CPU's streams, where torch runs one
    batch on all cores (docs/results.md, the model path by runtime). On CUDA it is
    torch: the OpenVINO plugin here is the CPU's, and onnxruntime's CUDA providers are
    an install option, not a given. Either way the export serves only after it judged
    as torch fp32 does (`model.loading.load_model`).
    """
    check_choice(choice, precision)
    if choice != "auto":
        return choice  # type: ignore[return-value]
    if (
        device_type == "cpu"
        and precision in RUNTIMES["openvino"].precisions
        and importlib.util.find_spec("openvino") is not None
    ):
        return "openvino"
    return "torch"


def open_export(runtime: str, path: Path, precision: str = "fp32", device: str = "auto") -> Engine:
    """An engine of `runtime` over the ONNX export at `path` (its sha256 already checked).

    The runtime's library is imported here, so a torch-only worker never loads it.
    """
    check_choice(runtime, precision)
    if runtime == "onnxruntime":
        from model.runtimes.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, precision, device)
    if runtime == "openvino":
        from model.runtimes.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, precision)
    raise ValueError(f"runtime {runtime!r} runs the network itself, not an export")
