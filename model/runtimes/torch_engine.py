"""The torch runtime: a served copy of the network, fed in cache-sized chunks on the CPU.

Profiled on a 2-core CPU (fp32, 256 px, EfficientNet-Lite0 teacher and student),
batch 16 ran at about two thirds of the images/s of batch 1. The causes are all
memory traffic: eval-mode batch norms as separate passes over every activation,
and timm's "same" padding copying the input of every stride-2 convolution (both
removed in the served copy, `folding.serving_copy`); and a batch of 16 images'
activations (~100 MB at the first stages) does not fit in the caches, so every
remaining elementwise op and depthwise convolution streams from DRAM. On the CPU
the batch is therefore run `CPU_CHUNK` images at a time: a chunk's activations
stay in cache. Scores do not depend on the chunking (eval mode: images never
interact). On a GPU the whole batch goes in one call.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from model.judgement import Judgement
from model.runtimes.folding import serving_copy

#: Images per forward call on a CPU: measured best at 2 on 256 px Lite0 (2 cores)
#: (activations of a chunk fit in L2/L3); larger chunks stream from DRAM.
CPU_CHUNK = 2
#: The autocast dtype of each precision torch runs at (`model.runtimes.RUNTIMES`).
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchEngine:
    """`network` on `device` at `precision` (autocast), as an engine (`model.runtimes`).

    `network` is left as it is: the engine serves a folded copy.
    """

    runtime = "torch"

    def __init__(
        self,
        network: nn.Module,
        device: torch.device,
        precision: str,
        image_size: int,
        compile_mode: str | None = None,
    ) -> None:
        self.device, self.precision = device, precision
        #: torch.compile mode of the served copies (None: eager); for GPU benchmarks
        self.compile_mode = compile_mode
        self.original = network.to(device).eval().to(memory_format=torch.channels_last)
        self._served: dict[tuple[int, int], nn.Module] = {}
        self.network = self.served((image_size, image_size))
        self.chunk = CPU_CHUNK if device.type == "cpu" else None

    def served(self, size: tuple[int, int]) -> nn.Module:
        """The served copy for frames of `size` (its padding is fixed for one size): the
        model's input size is made at once; the worker never feeds another."""
        key = (int(size[0]), int(size[1]))
        if key not in self._served:
            example = torch.zeros(1, 3, *key, device=self.device)
            served = serving_copy(self.original, example)
            if self.compile_mode is not None:
                served = torch.compile(served, mode=self.compile_mode)
            self._served[key] = served
        return self._served[key]

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def __call__(self, frames: np.ndarray) -> Judgement[np.ndarray]:
        network = self.served(frames.shape[1:3])
        batch = torch.from_numpy(frames).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        step = self.chunk or len(batch)
        scores, maps = [], []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(batch), step):
                judged = network(batch[start : start + step])
                scores.append(judged.scores.float())
                maps.append(judged.maps.float())
        return Judgement(scores=torch.cat(scores).cpu().numpy(), maps=torch.cat(maps).cpu().numpy())
