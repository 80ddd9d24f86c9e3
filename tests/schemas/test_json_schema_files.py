"""The committed JSON Schema files must match the models: integrators pin these files."""

from pathlib import Path

from schemas import export


def test_committed_schema_files_are_up_to_date():
    stale = export.stale_files()
    assert not stale, (
        f"out of date: {', '.join(stale)}; run `python -m schemas.export` and commit schemas/json/"
    )


def test_every_exported_model_has_a_version_and_a_dialect():
    for name, text in export.render().items():
        assert '"schema_version"' in text, name
        assert '"$schema": "https://json-schema.org/draft/2020-12/schema"' in text, name


def test_check_mode_reports_a_stale_file(tmp_path: Path):
    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.main(["--dir", str(tmp_path), "--check"]) == 0
    victim = next(tmp_path.glob("verdict.schema.json"))
    victim.write_text("{}\n")
    assert export.main(["--dir", str(tmp_path), "--check"]) == 1
