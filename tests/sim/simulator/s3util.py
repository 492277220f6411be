"""S3 helpers working directly on moto's in-process S3 backend (no HTTP, no fault injection).

    download_prefix("s3://b/p/", "/dir", shard=(i, n)) -> number of files   (S3Prefix semantics)
    download_manifest("s3://b/m.json", "/dir", shard=(i, n)) -> number of files (ManifestFile)
    upload_file("/f", "s3://b/k") ; upload_dir_tar("/dir", "s3://b/k.tar.gz") ; put_bytes(uri, data)
    get_bytes(uri) -> bytes ; list_keys(uri) -> [key, ...]

Errors are raised as S3Error with an AWS-like message (NoSuchBucket, NoSuchKey, ...).
"""
from __future__ import annotations

import json
import os
import tarfile
import tempfile

DEFAULT_ACCOUNT = "123456789012"


class S3Error(Exception):
    pass


def parse_uri(uri: str) -> tuple[str, str]:
    if not uri or not uri.startswith("s3://"):
        raise S3Error(f"not an s3:// URI: {uri!r}")
    rest = uri[5:]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise S3Error(f"no bucket in {uri!r}")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def _backend(account_id: str):
    from moto.s3.models import s3_backends
    return s3_backends[account_id or DEFAULT_ACCOUNT]["aws"]


def _bucket(account_id: str, name: str):
    b = _backend(account_id)
    try:
        return b.get_bucket(name)
    except Exception as e:
        raise S3Error(f"NoSuchBucket: The specified bucket does not exist: {name}") from e


def list_keys(uri: str, *, account_id: str = DEFAULT_ACCOUNT) -> list[str]:
    bucket, prefix = parse_uri(uri)
    b = _bucket(account_id, bucket)
    keys = [k for k in list(b.keys.keys()) if k.startswith(prefix)]
    # keys.keys() includes deleted-marker-only entries in versioned buckets; keep live ones
    out = []
    for k in sorted(keys):
        try:
            obj = b.keys[k]
        except KeyError:
            continue
        if getattr(obj, "is_delete_marker", False) or obj.__class__.__name__ == "FakeDeleteMarker":
            continue
        out.append(k)
    return out


def get_bytes(uri: str, *, account_id: str = DEFAULT_ACCOUNT) -> bytes:
    bucket, key = parse_uri(uri)
    obj = _backend(account_id).get_object(bucket, key) if key else None
    if obj is None:
        raise S3Error(f"NoSuchKey: The specified key does not exist: {uri}")
    return obj.value


def _safe_rel(rel: str) -> str | None:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return os.path.join(*parts)


def download_prefix(uri: str, dest_dir: str, *, account_id: str = DEFAULT_ACCOUNT,
                    shard: tuple[int, int] | None = None) -> int:
    """Download every object under the prefix into dest_dir, keys relative to the prefix.
    A key equal to the prefix (a single-object "prefix") is stored under its base name.
    shard=(i, n) keeps every n-th key starting at i (ShardedByS3Key)."""
    bucket, prefix = parse_uri(uri)
    os.makedirs(dest_dir, exist_ok=True)
    entries = [(k[len(prefix):].lstrip("/") if k != prefix else os.path.basename(k),
                f"s3://{bucket}/{k}")
               for k in _sharded(list_keys(uri, account_id=account_id), shard)
               if not k.endswith("/")]  # "folder" placeholder objects
    return _write_objects(entries, dest_dir, account_id)


def _sharded(items: list, shard: tuple[int, int] | None) -> list:
    """Every n-th item starting at i for shard=(i, n) (ShardedByS3Key); all without one."""
    if not shard:
        return items
    i, n = shard
    return items[i::n]


def _write_objects(entries: list[tuple[str, str]], dest_dir: str, account_id: str) -> int:
    """Write each (relative path, s3 URI) below dest_dir, skipping paths that would leave it;
    returns how many were written."""
    count = 0
    for rel, obj in entries:
        safe = _safe_rel(rel)
        if safe is None:
            continue
        path = os.path.join(dest_dir, safe)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = get_bytes(obj, account_id=account_id)
        with open(path, "wb") as f:
            f.write(data)
        count += 1
    return count


def manifest_uris(uri: str, *, account_id: str = DEFAULT_ACCOUNT) -> list[tuple[str, str]]:
    """The objects a ManifestFile channel names: [(relative key, s3 URI)]. The manifest is a JSON
    array whose first element is {"prefix": "s3://bucket/prefix/"} and whose other elements are
    keys relative to it, as SageMaker reads it; anything else raises S3Error with its reason."""
    try:
        doc = json.loads(get_bytes(uri, account_id=account_id))
    except ValueError as e:
        raise S3Error(f"ManifestFile {uri} is not valid JSON: {e}") from e
    if (not isinstance(doc, list) or not doc or not isinstance(doc[0], dict)
            or not isinstance(doc[0].get("prefix"), str)
            or not all(isinstance(k, str) for k in doc[1:])):
        raise S3Error(f"ManifestFile {uri} must be a JSON array of a {{\"prefix\": ...}} object "
                      f"followed by keys")
    prefix = doc[0]["prefix"]
    parse_uri(prefix)
    return [(rel, prefix + rel) for rel in doc[1:]]


def download_manifest(uri: str, dest_dir: str, *, account_id: str = DEFAULT_ACCOUNT,
                      shard: tuple[int, int] | None = None) -> int:
    """Download the objects a manifest names into dest_dir by their relative keys (ShardedByS3Key:
    every n-th one starting at i)."""
    entries = _sharded(manifest_uris(uri, account_id=account_id), shard)
    return _write_objects(entries, dest_dir, account_id)


def put_bytes(uri: str, data: bytes, *, account_id: str = DEFAULT_ACCOUNT,
              kms_key_id: str | None = None) -> None:
    """Writes one object; with `kms_key_id` it is stored SSE-KMS with that key (as SageMaker
    writes outputs when OutputDataConfig.KmsKeyId is set)."""
    bucket, key = parse_uri(uri)
    if not key:
        raise S3Error(f"no key in {uri!r}")
    _bucket(account_id, bucket)
    _backend(account_id).put_object(bucket, key, data,
                                    encryption="aws:kms" if kms_key_id else None,
                                    kms_key_id=kms_key_id or None)


def upload_file(path: str, uri: str, *, account_id: str = DEFAULT_ACCOUNT,
                kms_key_id: str | None = None) -> None:
    with open(path, "rb") as f:
        put_bytes(uri, f.read(), account_id=account_id, kms_key_id=kms_key_id)


def upload_dir(src_dir: str, uri_prefix: str, *, account_id: str = DEFAULT_ACCOUNT) -> int:
    """Upload every regular file under src_dir to uri_prefix/<relative path>."""
    n = 0
    for root, _dirs, files in os.walk(src_dir):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            rel = os.path.relpath(p, src_dir).replace(os.sep, "/")
            upload_file(p, join(uri_prefix, rel), account_id=account_id)
            n += 1
    return n


def tar_gz_dir(src_dir: str, out_path: str) -> None:
    """A real gzip'd tarball of the directory's contents (entry names relative, no "./")."""
    with tarfile.open(out_path, "w:gz") as tf:
        if os.path.isdir(src_dir):
            for name in sorted(os.listdir(src_dir)):
                tf.add(os.path.join(src_dir, name), arcname=name, recursive=True)


def upload_dir_tar(src_dir: str, uri: str, *, account_id: str = DEFAULT_ACCOUNT,
                   tmp_dir: str | None = None, kms_key_id: str | None = None) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".tar.gz", dir=tmp_dir)
    os.close(fd)
    try:
        tar_gz_dir(src_dir, tmp)
        upload_file(tmp, uri, account_id=account_id, kms_key_id=kms_key_id)
    finally:
        os.unlink(tmp)
