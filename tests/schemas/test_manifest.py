"""The manifest's files and architecture, and how a version 1 manifest is read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.manifest import MANIFEST_SCHEMA_VERSION, ModelManifest, ReleaseFile

DIGEST = "ab" * 32
BASE = {
    "version": "v1",
    "created": "2026-01-01T00:00:00Z",
    "backbone": "efficientnet_lite0",
    "image_size": 64,
    "normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3},
    "products": {"p": {"threshold": 1.0, "rule": "r", "normal_scores": 3}},
}


def test_a_version_1_manifest_becomes_one_file_of_a_student_teacher_release():
    manifest = ModelManifest.model_validate(
        BASE | {"schema_version": 1, "weights_file": "w.safetensors", "sha256": DIGEST}
    )
    assert manifest.files == [ReleaseFile(name="w.safetensors", sha256=DIGEST)]
    assert manifest.architecture == "student_teacher"
    assert manifest.schema_version == MANIFEST_SCHEMA_VERSION
    # a version 1 manifest without weights_file had the default name
    assert ModelManifest.model_validate(BASE | {"sha256": DIGEST}).files[0].name == (
        "model.safetensors"
    )


def test_a_version_1_manifest_still_needs_its_sha256():
    with pytest.raises(ValidationError):
        ModelManifest.model_validate(BASE | {"weights_file": "model.safetensors"})
    with pytest.raises(ValidationError):
        ModelManifest.model_validate(BASE | {"sha256": "not a digest"})


@pytest.mark.parametrize(
    "name", ["../model.safetensors", "a/b.safetensors", ".hidden", "manifest.json", ""]
)
def test_a_file_name_is_a_plain_name_beside_the_manifest(name):
    with pytest.raises(ValidationError):
        ModelManifest.model_validate(BASE | {"files": [{"name": name, "sha256": DIGEST}]})


def test_files_are_distinct_and_at_least_one():
    twice = [{"name": "a.safetensors", "sha256": DIGEST}] * 2
    for files in (twice, []):
        with pytest.raises(ValidationError):
            ModelManifest.model_validate(BASE | {"files": files})


def test_the_digest_names_the_exact_files():
    one = ModelManifest.model_validate(BASE | {"files": [{"name": "a", "sha256": DIGEST}]})
    other = one.model_copy(update={"files": [ReleaseFile(name="a", sha256="cd" * 32)]})
    renamed = one.model_copy(update={"files": [ReleaseFile(name="b", sha256=DIGEST)]})
    assert len({one.digest, other.digest, renamed.digest}) == 3
    assert one.digest == ModelManifest.model_validate_json(one.model_dump_json()).digest


def test_a_manifest_without_backbone_or_normalisation_is_valid():
    """Architectures without a backbone exist (the registry decides what a network needs)."""
    manifest = ModelManifest.model_validate(
        {k: v for k, v in BASE.items() if k not in ("backbone", "normalisation")}
        | {"architecture": "other", "files": [{"name": "a.safetensors", "sha256": DIGEST}]}
    )
    assert (manifest.backbone, manifest.normalisation) == (None, None)
