"""The served model: a verified network on a device, judging batches of RGB frames.

One code path serves the GPU (production) and the CPU (tests, small lines): the
device and the autocast precision are settings, not forks of the code. A model
is loaded from a release by `model.release` (verified, any registered
architecture); this module only serves it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.images import fit_to_size
from model.judgement import Judgement
from model.runtimes import Engine, check_choice
from model.runtimes.torch_engine import TorchEngine
from schemas.manifest import ModelManifest

#: The CPU flags that decide inference speed, as benchmarks print them.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_has_bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX), read from Linux's flags.

    Elsewhere (no such file) the answer is True: no warning rather than a wrong one.
    """
    try:
        flags = cpuinfo.read_text().split()
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model, core count and `SPEED_FLAGS`: what a benchmark's figures depend on."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return f"{platform.processor() or platform.machine()}; {os.cpu_count()} CPUs"
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    found = " ".join(f for f in SPEED_FLAGS if f in flags)
    return f"{model}; {os.cpu_count()} CPUs; flags: {found}"


def fastest_precision(device: torch.device) -> str:
    """bf16 where it is computed natively (CUDA, or a CPU with bf16 units), else fp32.

    On a CPU without bf16 units torch emulates it: measured on a 2-core AVX2 CPU, the
    Lite0 pair served 1.3-1.8 images/s in bf16 against 44-54 in fp32.
    """
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units()):
        return "bf16"
    return "fp32"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class InspectionModel:
    """A network ready to serve: on its device, in eval mode, with its manifest.

    The network takes a (N, 3, S, S) batch of RGB pixels in [0, 255] and returns
    a `Judgement`, image scores (N,) and anomaly maps (N, S, S): every
    architecture does. It is
    run by `engine` (`model.runtimes`): by default torch on `device` at
    `precision`; a compiled export when the release ships one and the worker is
    configured for it (`model.loading.load_model`). `network` stays the
    torch network either way.
    """

    def __init__(
        self,
        network: nn.Module,
        manifest: ModelManifest,
        device: str = "auto",
        precision: str = "fp32",
        engine: Engine | None = None,
    ) -> None:
        check_choice(engine.runtime if engine is not None else "torch", precision)
        self.manifest = manifest
        self.device = resolve_device(device)
        self.precision = precision
        self.network = network.to(self.device).eval()
        self.network.to(memory_format=torch.channels_last)
        self.engine: Engine = engine or TorchEngine(
            self.network, self.device, precision, manifest.image_size
        )
        self.runtime = self.engine.runtime

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    def threshold(self, product: str, line: str | None = None) -> float | None:
        """The threshold of `product` on `line` (the line's own where it has one)."""
        entry = self.manifest.threshold_entry(product, line)
        return None if entry is None else entry.threshold

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Resize an RGB uint8 frame to the model's input size (done in the decode threads)."""
        return fit_to_size(image, self.image_size)

    def judge(self, frames: Sequence[np.ndarray]) -> Judgement[np.ndarray]:
        """Score a batch of prepared (S, S, 3) uint8 RGB frames in ONE forward pass."""
        return self.engine(np.stack(frames))

    def scores(self, frames: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
        """Image scores (N,) of any number of prepared frames, `batch` per forward pass."""
        out = [
            self.judge(frames[start : start + batch]).scores
            for start in range(0, len(frames), batch)
        ]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def warm_up(self, batch_size: int = 1) -> None:
        """Run a zero batch so the first real frame does not pay for lazy initialisation."""
        size = self.image_size
        self.judge([np.zeros((size, size, 3), np.uint8)] * batch_size)
