"""What every network, engine and ONNX graph returns: image scores and anomaly maps, by name.

One named result, so nothing depends on which of the two comes first: the
network returns it (torch tensors), every engine returns it (float32 numpy
arrays on the host), and the ONNX export names its outputs after its fields
(`OUTPUT_NAMES`), which the compiled runtimes read by name.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

ArrayT = TypeVar("ArrayT")


class Judgement(NamedTuple, Generic[ArrayT]):
    """One batch judged: image scores (N,) and anomaly maps (N, S, S)."""

    scores: ArrayT
    maps: ArrayT


#: The ONNX graph's output names, in the order the export writes them.
OUTPUT_NAMES: tuple[str, ...] = Judgement._fields
