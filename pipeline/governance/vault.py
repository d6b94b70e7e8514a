"""The raw vault: original chunks, envelope-encrypted before they leave the pipeline.

Layout of one raw object (``camera=<id>/date=YYYY-MM-DD/hour=HH/<first frame>_<chunk_seq>.raw``)::

    VEILRAW1\\n<header length, ASCII decimal>\\n<header JSON>\\n<stuffed ciphertext>

* The header (ASCII JSON) says what the object holds and how to open it: camera, chunk
  sequence, first/last frame time, the key provider and master key id, the wrapped data
  key and the AES-GCM nonce. It is the AEAD's associated data: changing any of it makes
  decryption fail.
* The ciphertext is AES-256-GCM of the chunk (its ``ChunkCaptured`` metadata and the
  camera's own payload: H.264 GOPs untouched, no re-encode) under a *data key* that is
  one per camera and day, wrapped by a *master key* from a :class:`KeyProvider` (a local
  key file, or a KMS: the master key never leaves it). The wrapped data key is also
  stored once per camera and day under ``keys/``, so a day can be crypto-shredded.
* The ciphertext is byte-stuffed (every ``00`` byte is followed by ``ff``): random bytes
  would contain the H.264 start code ``00 00 01`` about once per 16 MiB, and a scanner
  looking for video in a bucket must find none, deterministically. It costs 1/256 in size.

Pure except for :class:`RawVault`, which talks to an ``ObjectStore``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from schemas.errors import ConfigError, VeilStreamError

logger = logging.getLogger(__name__)

MAGIC = b"VEILRAW1\n"
RAW_CONTENT_TYPE = "application/x-veil-raw-sealed"
KEY_CONTENT_TYPE = "application/x-veil-wrapped-key"
_RAW_NAME = re.compile(r"/(\d{8}T\d{9}Z)_(\d+)\.raw$")


class VaultError(VeilStreamError):
    """A raw object cannot be written or opened."""


class VaultKeyError(VaultError):
    """The master key cannot unwrap a data key (wrong key file, KMS denied or missing)."""


# ---------------------------------------------------------------- key providers
class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a master key the caller never sees in plain."""

    name: str

    @property
    def key_id(self) -> str:
        """Identifies the master key (stored with every wrapped data key)."""
        ...

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> bytes: ...

    def unwrap(self, wrapped: bytes, key_id: str, context: Mapping[str, str]) -> bytes:
        """Raises :class:`VaultKeyError` when this master key cannot unwrap it."""
        ...


def _aad(context: Mapping[str, str]) -> bytes:
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode("utf-8")


class LocalKeyFileProvider:
    """Master key in a local file: 32 raw bytes or 64 hex characters (``make_key_file``).

    For a single site or a test; production uses a KMS so the master key never sits on a
    disk the pipeline can read. The file is read when first needed, never at import.
    """

    name = "local"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._key: bytes | None = None

    def _master(self) -> bytes:
        if self._key is None:
            try:
                raw = self.path.read_bytes()
            except OSError as exc:
                raise VaultKeyError(f"master key file {self.path}: {exc.strerror or exc}") from None
            text = raw.strip()
            if len(text) == 64 and re.fullmatch(rb"[0-9a-fA-F]{64}", text):
                raw = bytes.fromhex(text.decode("ascii"))
            if len(raw) != 32:
                raise VaultKeyError(f"master key file {self.path}: expected 32 bytes or 64 hex characters, "
                                    f"got {len(raw)} bytes (create one with `veilstream vault keygen FILE`)")
            self._key = raw
        return self._key

    @property
    def key_id(self) -> str:
        return "local:" + hashlib.sha256(b"veilstream-master-key:" + self._master()).hexdigest()[:16]

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce + AESGCM(self._master()).encrypt(nonce, data_key, _aad(context))

    def unwrap(self, wrapped: bytes, key_id: str, context: Mapping[str, str]) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if key_id != self.key_id:
            raise VaultKeyError(f"wrong master key: the data key was wrapped by {key_id}, the key file "
                                f"{self.path} is {self.key_id}")
        try:
            return AESGCM(self._master()).decrypt(wrapped[:12], wrapped[12:], _aad(context))
        except InvalidTag:
            raise VaultKeyError(f"wrong master key: {self.path} cannot unwrap the data key "
                                "(the wrapped key or its context was altered)") from None


def make_key_file(path: str | os.PathLike[str]) -> str:
    """Write a new random master key (64 hex characters, mode 0600); returns its key id."""
    p = Path(path)
    if p.exists():
        raise ConfigError(f"{p} exists: refusing to overwrite a master key")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    return LocalKeyFileProvider(p).key_id


class AwsKmsKeyProvider:
    """Master key in AWS KMS (or any KMS speaking its API): ``Encrypt`` / ``Decrypt`` with
    the data key's context as the KMS encryption context (logged by CloudTrail).

    Credentials come from boto3's default chain (IRSA / instance role in production; the
    ``AWS_*`` variables locally). ``endpoint_url`` points at a KMS-compatible endpoint.
    """

    name = "aws-kms"

    def __init__(self, key_id: str, *, region: str = "us-east-1", endpoint_url: str | None = None) -> None:
        if not key_id:
            raise ConfigError("raw_vault.kms_key_id is not set (a KMS key id, ARN or alias/...)")
        self._key_id = key_id
        self.region = region
        self.endpoint_url = endpoint_url
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("kms", region_name=self.region, endpoint_url=self.endpoint_url)
        return self._client

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        try:
            r = self.client.encrypt(KeyId=self._key_id, Plaintext=data_key, EncryptionContext=dict(context))
        except Exception as exc:  # noqa: BLE001 - botocore ClientError / endpoint errors
            raise VaultKeyError(f"KMS encrypt with key {self._key_id} failed: {_why(exc)}") from None
        return bytes(r["CiphertextBlob"])

    def unwrap(self, wrapped: bytes, key_id: str, context: Mapping[str, str]) -> bytes:
        try:
            r = self.client.decrypt(CiphertextBlob=wrapped, EncryptionContext=dict(context), KeyId=key_id)
        except Exception as exc:  # noqa: BLE001
            raise VaultKeyError(f"wrong master key: KMS cannot unwrap the data key with {key_id}: "
                                f"{_why(exc)}") from None
        return bytes(r["Plaintext"])


def _why(exc: BaseException) -> str:
    err = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    if err:
        return f"{err.get('Code')}: {err.get('Message')}"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def key_provider_from_config(rv: Any) -> KeyProvider:
    """The provider the config's ``raw_vault`` section names."""
    kind = getattr(rv, "key_provider", "local")
    if kind == "local":
        if not getattr(rv, "key_file", None):
            raise ConfigError("raw_vault.key_file is not set (create one with `veilstream vault keygen FILE`)")
        return LocalKeyFileProvider(rv.key_file)
    if kind == "aws-kms":
        return AwsKmsKeyProvider(rv.kms_key_id or "", region=rv.kms_region, endpoint_url=rv.kms_endpoint)
    raise ConfigError(f"raw_vault.key_provider: expected local or aws-kms, got {kind!r}")


# ---------------------------------------------------------------- sealing (pure)
def stuff(data: bytes) -> bytes:
    """Every ``00`` byte followed by ``ff``: no ``00 00`` pair, so no H.264 start code."""
    return data.replace(b"\x00", b"\x00\xff")


def unstuff(data: bytes) -> bytes:
    return data.replace(b"\x00\xff", b"\x00")


def day_of(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC).strftime("%Y-%m-%d")


def data_key_context(camera_id: str, day: str) -> dict[str, str]:
    return {"purpose": "veilstream-raw-vault", "camera": camera_id, "date": day}


@dataclass(frozen=True)
class DataKey:
    """A camera-day's data key: plain (in memory only) and wrapped (stored)."""

    camera_id: str
    day: str
    plain: bytes
    wrapped: bytes
    provider: str
    key_id: str


def new_data_key(provider: KeyProvider, camera_id: str, day: str) -> DataKey:
    plain = os.urandom(32)
    return DataKey(camera_id, day, plain, provider.wrap(plain, data_key_context(camera_id, day)), provider.name,
                   provider.key_id)


def seal(chunk_meta: Mapping[str, Any], payload: bytes, key: DataKey) -> bytes:
    """Encrypt one chunk (its ``ChunkCaptured`` metadata and payload) into a raw object."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    pts = list(chunk_meta.get("pts_ms") or [0])
    nonce = os.urandom(12)
    header = {
        "v": 1, "camera_id": key.camera_id, "date": key.day, "chunk_seq": int(chunk_meta.get("chunk_seq", 0)),
        "first_ms": int(pts[0]), "last_ms": int(pts[-1]), "frames": len(pts),
        "codec": str(chunk_meta.get("codec", "")),
        "provider": key.provider, "key_id": key.key_id,
        "wrapped_key": base64.b64encode(key.wrapped).decode("ascii"),
        "nonce": base64.b64encode(nonce).decode("ascii"), "alg": "AES-256-GCM",
    }
    hb = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    meta = json.dumps(dict(chunk_meta), sort_keys=True, separators=(",", ":")).encode("utf-8")
    plain = str(len(meta)).encode("ascii") + b"\n" + meta + payload
    ct = AESGCM(key.plain).encrypt(nonce, plain, hb)
    return MAGIC + str(len(hb)).encode("ascii") + b"\n" + hb + b"\n" + stuff(ct)


def read_header(blob: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """``(header, header bytes, stuffed ciphertext)`` of a raw object."""
    if not blob.startswith(MAGIC):
        raise VaultError("not a VeilStream raw object (bad magic)")
    rest = blob[len(MAGIC):]
    n_s, _, rest = rest.partition(b"\n")
    try:
        n = int(n_s)
        hb = rest[:n]
        header = json.loads(hb)
    except ValueError:
        raise VaultError("raw object header is unreadable") from None
    if rest[n:n + 1] != b"\n" or not isinstance(header, dict):
        raise VaultError("raw object header is unreadable")
    return header, hb, rest[n + 1:]


def unseal(blob: bytes, provider: KeyProvider, cache: dict[tuple[str, str, str], bytes] | None = None
           ) -> tuple[dict[str, Any], bytes]:
    """``(ChunkCaptured metadata, payload)`` of a raw object.

    Raises:
        VaultKeyError: the provider's master key is not the one that wrapped the data key.
        VaultError: the object is damaged or altered (AEAD tag mismatch).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header, hb, body = read_header(blob)
    wrapped = base64.b64decode(header["wrapped_key"])
    ck = (header["key_id"], header["camera_id"], header["date"] + ":" + hashlib.sha256(wrapped).hexdigest())
    plain_key = cache.get(ck) if cache is not None else None
    if plain_key is None:
        plain_key = provider.unwrap(wrapped, header["key_id"], data_key_context(header["camera_id"], header["date"]))
        if cache is not None:
            cache[ck] = plain_key
    try:
        plain = AESGCM(plain_key).decrypt(base64.b64decode(header["nonce"]), unstuff(body), hb)
    except InvalidTag:
        raise VaultError(f"raw object of camera {header.get('camera_id')} chunk {header.get('chunk_seq')} "
                         "was altered or damaged (authentication failed)") from None
    n_s, _, rest = plain.partition(b"\n")
    n = int(n_s)
    return json.loads(rest[:n]), rest[n:]


def raw_key(camera_id: str, first_ms: int, chunk_seq: int) -> str:
    from pipeline.objectkeys import format_ts, segment_prefix

    return f"{segment_prefix(camera_id, first_ms)}{format_ts(first_ms)}_{int(chunk_seq)}.raw"


def data_key_object(camera_id: str, day: str) -> str:
    from pipeline.objectkeys import key_component

    return f"keys/camera={key_component(camera_id)}/date={day}.key"


def raw_key_first_ms(key: str) -> int | None:
    """First-frame time (ms) encoded in a raw object key, or ``None``."""
    m = _RAW_NAME.search(key)
    if not m:
        return None
    s = m.group(1)
    t = dt.datetime.strptime(s[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1000 + int(s[15:18])


def days_between(from_ms: int, to_ms: int) -> list[str]:
    d = dt.datetime.fromtimestamp(from_ms // 1000, tz=dt.UTC).date()
    end = dt.datetime.fromtimestamp(to_ms // 1000, tz=dt.UTC).date()
    out = []
    while d <= end:
        out.append(d.isoformat())
        d += dt.timedelta(days=1)
    return out


# ---------------------------------------------------------------- the vault on a store
class RawVault:
    """Seal chunks into, and open them from, the raw bucket (``store``)."""

    MAX_CHUNK_MS = 60_000  # longest chunk ingest makes (ingest.chunk_seconds <= 60)

    def __init__(self, store: Any, provider: KeyProvider) -> None:
        self.store = store
        self.provider = provider
        self._keys: dict[tuple[str, str], DataKey] = {}
        self._plain_cache: dict[tuple[str, str, str], bytes] = {}

    def data_key(self, camera_id: str, day: str, retention: Any = None) -> DataKey:
        """The camera-day's data key: cached, else the stored wrapped key, else a new one."""
        k = self._keys.get((camera_id, day))
        if k is not None:
            return k
        obj = data_key_object(camera_id, day)
        if self.store.stat_object(obj) is not None:
            doc = json.loads(self.store.get_object(obj))
            wrapped = base64.b64decode(doc["wrapped_key"])
            if doc["key_id"] == self.provider.key_id:
                plain = self.provider.unwrap(wrapped, doc["key_id"], data_key_context(camera_id, day))
                k = DataKey(camera_id, day, plain, wrapped, doc["provider"], doc["key_id"])
        if k is None:  # no key yet, or the master key rotated: a new data key from here on
            k = new_data_key(self.provider, camera_id, day)
            doc = {"camera_id": camera_id, "date": day, "provider": k.provider, "key_id": k.key_id,
                   "wrapped_key": base64.b64encode(k.wrapped).decode("ascii")}
            self.store.put_object(obj, json.dumps(doc, sort_keys=True).encode("ascii"), KEY_CONTENT_TYPE,
                                  {"camera": camera_id}, {}, retention=retention)
        self._keys[(camera_id, day)] = k
        return k

    def put_chunk(self, chunk_meta: Mapping[str, Any], payload: bytes, *, tags: Mapping[str, str],
                  retention: Any = None) -> str:
        """Seal and store one chunk; durable on return. Returns its key."""
        cam = str(chunk_meta["camera_id"])
        first = int((chunk_meta.get("pts_ms") or [0])[0])
        key = raw_key(cam, first, int(chunk_meta["chunk_seq"]))
        dk = self.data_key(cam, day_of(first), retention)
        blob = seal(chunk_meta, payload, dk)
        self.store.put_object(key, blob, RAW_CONTENT_TYPE, {"camera": cam, "key-id": dk.key_id},
                              dict(tags), retention=retention)
        return key

    def keys_between(self, camera_id: str, from_ms: int, to_ms: int) -> list[str]:
        """Raw object keys of a camera whose chunk may overlap ``[from_ms, to_ms]``, by time."""
        from pipeline.objectkeys import key_component

        found: list[tuple[int, str]] = []
        for day in days_between(from_ms - self.MAX_CHUNK_MS, to_ms):
            for key in self.store.list_objects(f"camera={key_component(camera_id)}/date={day}/"):
                first = raw_key_first_ms(key)
                if first is not None and from_ms - self.MAX_CHUNK_MS <= first <= to_ms:
                    found.append((first, key))
        return [k for _f, k in sorted(found)]

    def open(self, key: str) -> tuple[dict[str, Any], bytes]:
        return unseal(self.store.get_object(key), self.provider, self._plain_cache)

    def chunks_between(self, camera_id: str, from_ms: int, to_ms: int) -> Iterator[tuple[str, dict[str, Any], bytes]]:
        """``(key, ChunkCaptured metadata, payload)`` of every stored chunk overlapping the interval."""
        for key in self.keys_between(camera_id, from_ms, to_ms):
            meta, payload = self.open(key)
            pts = meta.get("pts_ms") or []
            if pts and pts[-1] >= from_ms and pts[0] <= to_ms:
                yield key, meta, payload
