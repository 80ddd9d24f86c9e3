"""ObjectStore against an in-process fake of the MinIO client (no server; see tests/integration)."""

import io

import pytest
from minio.error import S3Error
from pydantic import SecretStr

from planes.storage import KIND_TAG, ObjectStore, make_s3_client, retention_rules
from worker.settings import WorkerSettings


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, code, None, None, None)


class FakeResponse:
    def __init__(self, data: bytes):
        self._data = data
        self.closed = self.released = False

    def read(self) -> bytes:
        return self._data

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        self.released = True


class FakeMinio:
    """The subset of minio.Minio that ObjectStore uses, keeping objects in a dict."""

    def __init__(self, race: bool = False):
        self.buckets: set[str] = set()
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.tags: dict[tuple[str, str], dict[str, str]] = {}
        self.race = race
        self.responses: list[FakeResponse] = []

    def bucket_exists(self, bucket: str) -> bool:
        return bucket in self.buckets

    def make_bucket(self, bucket: str) -> None:
        if self.race or bucket in self.buckets:
            raise s3_error("BucketAlreadyOwnedByYou")
        self.buckets.add(bucket)

    def put_object(
        self,
        bucket,
        key,
        data: io.BytesIO,
        length: int,
        content_type: str,
        metadata=None,
        tags=None,
    ):
        payload = data.read()
        assert len(payload) == length
        self.objects[(bucket, key)] = (payload, content_type)
        self.tags[(bucket, key)] = dict(tags or {})

    def get_object(self, bucket, key) -> FakeResponse:
        if (bucket, key) not in self.objects:
            raise s3_error("NoSuchKey")
        response = FakeResponse(self.objects[(bucket, key)][0])
        self.responses.append(response)
        return response

    def stat_object(self, bucket, key):
        if (bucket, key) not in self.objects:
            raise s3_error("NoSuchKey")
        return object()


def test_put_then_get_with_content_type():
    fake = FakeMinio()
    store = ObjectStore(fake, "kenpin")
    store.ensure_bucket()
    store.put("heatmaps/l1/2024-05-01/f.png", b"\x89PNG...", "image/png")
    assert store.get("heatmaps/l1/2024-05-01/f.png") == b"\x89PNG..."
    assert fake.objects[("kenpin", "heatmaps/l1/2024-05-01/f.png")][1] == "image/png"
    assert fake.responses[0].closed and fake.responses[0].released


def test_put_overwrites_so_replays_do_not_duplicate():
    store = ObjectStore(FakeMinio(), "kenpin")
    store.put("k", b"first")
    store.put("k", b"second")
    assert store.get("k") == b"second"


def test_ensure_bucket_is_idempotent_and_survives_a_race():
    fake = FakeMinio()
    store = ObjectStore(fake, "kenpin")
    store.ensure_bucket()
    store.ensure_bucket()
    assert fake.buckets == {"kenpin"}
    ObjectStore(FakeMinio(race=True), "kenpin").ensure_bucket()  # created by someone else


def test_missing_object():
    store = ObjectStore(FakeMinio(), "kenpin")
    assert not store.exists("nope")
    with pytest.raises(S3Error) as info:
        store.get("nope")
    assert info.value.code == "NoSuchKey"


def test_client_from_settings_makes_no_request_and_hides_secrets():
    settings = WorkerSettings(
        s3_endpoint="127.0.0.1:1",
        s3_access_key=SecretStr("AKIAEXAMPLE"),
        s3_secret_key=SecretStr("not-a-real-secret"),
    )
    client = make_s3_client(settings)
    assert client._base_url.host == "127.0.0.1:1"  # no public accessor
    store = ObjectStore.from_settings(settings)
    assert store.bucket == "kenpin"
    assert "not-a-real-secret" not in repr(settings)


def test_frame_objects_are_tagged_with_their_kind_and_releases_are_not():
    fake = FakeMinio()
    store = ObjectStore(fake, "kenpin")
    store.put("heatmaps/l1/2024-05-01/f.png", b"h")
    store.put("heatmaps/l1/2024-05-01/f.original.jpg", b"o")
    store.put("normals/tile/2024-05-01/f.png", b"n")
    store.put("models/v1/manifest.json", b"{}")
    assert fake.tags[("kenpin", "heatmaps/l1/2024-05-01/f.png")] == {KIND_TAG: "heatmap"}
    assert fake.tags[("kenpin", "heatmaps/l1/2024-05-01/f.original.jpg")] == {KIND_TAG: "original"}
    assert fake.tags[("kenpin", "normals/tile/2024-05-01/f.png")] == {KIND_TAG: "normal"}
    assert fake.tags[("kenpin", "models/v1/manifest.json")] == {}


def test_failed_requests_are_reported_by_operation_and_a_missing_key_is_not():
    failures: list[str] = []
    store = ObjectStore(FakeMinio(), "kenpin", on_error=failures.append)
    assert not store.exists("nope")  # an answer, not a failure
    with pytest.raises(S3Error):
        store.get("nope")
    assert failures == ["get"]


def test_retention_rules_expire_each_kind_by_prefix_and_tag_and_keep_zero():
    config = retention_rules({"heatmap": 30, "original": 7, "normal": 0})
    rules = {r.rule_id: r for r in config.rules}
    assert set(rules) == {"kenpin-heatmap-retention", "kenpin-original-retention"}
    heatmap = rules["kenpin-heatmap-retention"]
    assert heatmap.expiration.days == 30
    assert heatmap.rule_filter.and_operator.prefix == "heatmaps/"
    assert dict(heatmap.rule_filter.and_operator.tags) == {KIND_TAG: "heatmap"}
    assert rules["kenpin-original-retention"].expiration.days == 7
    assert retention_rules({"heatmap": 0, "original": 0, "normal": 0}) is None
    with pytest.raises(ValueError):
        retention_rules({"normal": -1})
