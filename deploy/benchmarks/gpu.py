"""The GPU measurement in one command: every GPU runtime at batch 1-256, then the whole path.

    python -m deploy.benchmarks.gpu --out gpu.json [--model ARTIFACT] [--source DATASET]

On a CUDA machine: `kenpin-trainer bench`'s measurement (`trainer.research.benchmark`)
for torch fp32/fp16/bf16 eager, torch.compile and torch.compile with CUDA graphs
at fp16/bf16, and ONNX Runtime's TensorRT and CUDA providers where the installed
onnxruntime has them (a runtime that is not installed is listed as not measured,
never installed from here), at batch 1, 16, 64 and 256; then the whole Kafka path
(`deploy.benchmarks.pipeline`) with the local stack and a worker on the GPU. All
results go into ONE JSON file.

Without CUDA it does a short dry run on the CPU (small batches, short timings,
a small pipeline run) so the script itself is known to work, and the JSON says
`"dry_run": true`: its figures are not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from deploy.benchmarks import pipeline
from trainer.research.benchmark import run_benchmark

GPU_RUNTIMES = [
    "torch:fp32",
    "torch:fp16",
    "torch:bf16",
    "torch-compile:fp16",
    "torch-compile:bf16",
    "torch-cudagraphs:fp16",
    "torch-cudagraphs:bf16",
    "onnxruntime:fp32",
    "onnxruntime:fp16",
]
GPU_BATCHES = [1, 16, 64, 256]
DRY_RUNTIMES = ["torch:fp32", "onnxruntime:fp32"]
DRY_BATCHES = [1, 4]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--model", type=Path, help="artifact (default: an untrained pair)")
    parser.add_argument("--source", type=Path, help="MVTec-layout dataset for the pipeline")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--no-pipeline", action="store_true", help="the model path only")
    args = parser.parse_args(argv)

    gpu = torch.cuda.is_available()
    report: dict = {
        "dry_run": not gpu,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu",
    }
    if not gpu:
        print("no CUDA device: DRY RUN on the CPU (short, small); these are not GPU figures")
    runtimes, batches = (GPU_RUNTIMES, GPU_BATCHES) if gpu else (DRY_RUNTIMES, DRY_BATCHES)
    seconds = args.seconds if gpu else 0.5
    report["bench"] = run_benchmark(
        args.model,
        batches,
        seconds,
        runtimes=runtimes,
        rounds=2 if gpu else 1,
        device="cuda" if gpu else "cpu",
    )
    if args.no_pipeline:
        report["pipeline"] = "not run (--no-pipeline)"
    elif args.model is None or args.source is None:
        report["pipeline"] = "not run: it needs --model and --source"
    else:
        rows = args.out.with_suffix(".pipeline.json")
        pipeline_args = ["--model", str(args.model), "--source", str(args.source)]
        pipeline_args += ["--json", str(rows), "--out", str(args.out.parent / "pipeline")]
        if gpu:
            pipeline_args += ["--device", "cuda", "--batch", "64"]
            for runtime in ("torch:fp16", "torch:bf16", "onnxruntime:fp32"):
                pipeline_args += ["--runtime", runtime]
        else:
            pipeline_args += ["--frames", "32", "--lines", "1", "--latency-seconds", "2"]
            pipeline_args += ["--runtime", "torch:fp32", "--broker-storage", "memory"]
        pipeline.main(pipeline_args)
        report["pipeline"] = json.loads(rows.read_text())
        rows.unlink()
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}{' (dry run)' if not gpu else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
