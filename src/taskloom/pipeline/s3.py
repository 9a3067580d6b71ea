"""S3Repository: a pipeline repository in an S3 bucket (AWS, MinIO, Ceph, any S3 API).

Each key is one object, `<prefix><key><suffix>`. A put replaces an object whole, so writes are
atomic as the repository protocol asks: a writer that raises never uploads anything.
Needs the `s3` extra (aiobotocore).
"""

from __future__ import annotations

import importlib
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from ..errors import ConfigError, StoreUnavailableError, missing_extra
from .repositories import Blob, Mode, RepositoryBase, _check_mode, _Reader, _Writer, check_key

_MISSING = ("404", "NoSuchKey", "NotFound")


class S3Repository(RepositoryBase):
    """A repository in `bucket`, under `prefix` (e.g. `"runs/logs/"`), one object per key.

    Connection settings are aiobotocore's: `endpoint_url` (for a non-AWS server),
    `region_name`, and credentials from the arguments or the usual AWS environment and files.
    `client_options` go to `create_client` as they are; `session` is an aiobotocore session
    to share between repositories (it caches the service description). The client opens on
    first use; `await repo.close()` closes it. Keys are the objects directly under `prefix`
    whose names end with `suffix`, listed `page_size` at a time.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        suffix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        client_options: dict[str, Any] | None = None,
        name: str = "",
        page_size: int = 1000,
        session: Any = None,
    ) -> None:
        if not bucket:
            raise ConfigError("S3Repository needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix
        self.suffix = suffix
        self.name = name or f"s3://{bucket}/{prefix}"
        self.page_size = page_size
        self._session = session
        self._options: dict[str, Any] = {
            k: v
            for k, v in {
                "endpoint_url": endpoint_url,
                "region_name": region_name,
                "aws_access_key_id": aws_access_key_id,
                "aws_secret_access_key": aws_secret_access_key,
            }.items()
            if v is not None
        }
        self._options.update(client_options or {})
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    def object_key(self, key: str) -> str:
        """The object name that holds `key`."""
        return f"{self.prefix}{check_key(key)}{self.suffix}"

    async def _s3(self) -> Any:
        if self._client is None:
            try:
                session_mod: Any = importlib.import_module("aiobotocore.session")
            except ImportError:
                raise missing_extra("s3", "aiobotocore") from None
            if self._session is None:
                self._session = session_mod.get_session()
            stack = AsyncExitStack()
            self._client = await stack.enter_async_context(
                self._session.create_client("s3", **self._options)
            )
            self._stack = stack
        return self._client

    async def close(self) -> None:
        """Close the client (it reopens on next use)."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _call(self, op: str, **kwargs: Any) -> Any:
        """One S3 call; connection failures become `StoreUnavailableError`, a missing bucket
        `ConfigError`, a missing object `KeyError`."""
        client = await self._s3()
        botocore: Any = importlib.import_module("botocore.exceptions")
        try:
            return await getattr(client, op)(Bucket=self.bucket, **kwargs)
        except botocore.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise KeyError(kwargs.get("Key", "")) from None
            if code == "NoSuchBucket":
                raise ConfigError(f"S3 bucket {self.bucket!r} does not exist") from None
            raise
        except (botocore.EndpointConnectionError, botocore.ConnectionClosedError) as exc:
            raise StoreUnavailableError(f"S3 endpoint unreachable: {exc}") from exc

    async def keys(self) -> AsyncIterator[str]:
        token: str | None = None
        cut = len(self.suffix)
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = await self._call(
                "list_objects_v2", Prefix=self.prefix, Delimiter="/", MaxKeys=self.page_size,
                **extra,
            )  # fmt: skip
            for item in page.get("Contents", ()):
                name = item["Key"][len(self.prefix) :]
                if name and not name.startswith(".") and name.endswith(self.suffix):
                    yield name[: len(name) - cut] if cut else name
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def snapshot(self) -> frozenset[str]:
        return frozenset([key async for key in self.keys()])

    async def contains(self, key: str) -> bool:
        try:
            await self._call("head_object", Key=self.object_key(key))
        except KeyError:
            return False
        return True

    @asynccontextmanager
    async def open(self, key: str, mode: Mode = "rb") -> AsyncIterator[Blob]:
        _check_mode(mode)
        name = self.object_key(key)
        if mode == "rb":
            try:
                reply = await self._call("get_object", Key=name)
            except KeyError:
                raise KeyError(key) from None
            async with reply["Body"] as body:
                data = await body.read()
            yield _Reader(io.BytesIO(data))
            return
        buffer = io.BytesIO()
        yield _Writer(buffer)
        await self._call("put_object", Key=name, Body=buffer.getvalue())  # only if no raise

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Key=self.object_key(key))

    def __repr__(self) -> str:
        return f"S3Repository({self.bucket!r}, {self.prefix!r})"
