"""Downloading weights: one verified file per URL, or nothing at all.

`ZOO_OFFLINE=1` never touches the network (`file://` URLs still work);
`ZOO_DOWNLOAD_TIMEOUT` (seconds, default 30) bounds every network wait and
`ZOO_DOWNLOAD_DEADLINE` (seconds, default 3600) the whole transfer, so a server that
sends a byte a second cannot hold a command forever. A download never grows past the
size its weights entry records (meta 'bytes'), the server's Content-Length, or
`ZOO_DOWNLOAD_MAX_BYTES` (default 4 GB), whichever is known first. It streams into a
temp file beside its destination, is checked against the sha256 and only then
renamed into place, so an interrupted or corrupt one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
from pathlib import Path

from zoo import paths
from zoo.errors import UsageError, ZooError
from zoo.weights._text import one_line

ENV_OFFLINE = paths.ENV_OFFLINE
ENV_TIMEOUT = "ZOO_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
ENV_DEADLINE = "ZOO_DOWNLOAD_DEADLINE"
DEFAULT_DEADLINE_S = 3600.0
ENV_MAX_BYTES = "ZOO_DOWNLOAD_MAX_BYTES"
DEFAULT_MAX_BYTES = 4 * 10**9


class DownloadError(ZooError):
    """A download that failed, timed out, was cut short or did not match its sha256."""


def offline() -> bool:
    """`ZOO_OFFLINE=1`, as the datasets read it too (`zoo.paths.offline`)."""
    return paths.offline()


def _positive(env: str, default: float, unit: str) -> float:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{env}={raw!r} is not a number of {unit}") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{env}={raw!r} must be a positive number of {unit}")
    return value


def download_timeout() -> float:
    return _positive(ENV_TIMEOUT, DEFAULT_TIMEOUT_S, "seconds")


def download_deadline() -> float:
    return _positive(ENV_DEADLINE, DEFAULT_DEADLINE_S, "seconds")


def download_max_bytes() -> int:
    return int(_positive(ENV_MAX_BYTES, DEFAULT_MAX_BYTES, "bytes"))


def _free(directory: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _timed_out(url: str, timeout: float) -> DownloadError:
    return DownloadError(f"download of {url} timed out after {timeout:g} s (set {ENV_TIMEOUT} to wait longer)")


def download(url: str, dest: Path, sha256: str, *, timeout: float | None = None, size: int | None = None) -> Path:
    """Stream `url` into a temp file beside `dest`, check its sha256, then rename it into
    place. On any failure the temp file is deleted and nothing is left at `dest`.
    `size`: the bytes the file is known to have (its weights entry's), the most read."""
    import http.client
    import socket
    import time
    import urllib.error
    import urllib.request

    from zoo.versions import zoo_version

    timeout = download_timeout() if timeout is None else timeout
    deadline = time.monotonic() + download_deadline()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DownloadError(f"cannot download {url}: the cache {dest.parent} is not writable ({exc.strerror or one_line(exc)})") from None
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    received, total = 0, None
    try:
        with os.fdopen(fd, "wb") as fh:
            request = urllib.request.Request(url, headers={"User-Agent": f"zoo/{zoo_version()}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                limit, said = (
                    (size, "its weights entry records")
                    if size
                    else (total, "the server announced")
                    if total
                    else (download_max_bytes(), f"{ENV_MAX_BYTES} allows")
                )
                if total is not None and limit is not None and total > limit:
                    raise DownloadError(f"download of {url} announces {total} bytes but {said} {limit}; refused")
                free = _free(dest.parent)
                if total is not None and free is not None and total > free:
                    raise DownloadError(
                        f"cannot download {url}: it needs {total / 1e6:.1f} MB and {dest.parent} has {free / 1e6:.1f} MB free"
                    )
                bar = None
                if sys.stderr.isatty():  # a bar on a terminal; logs and pipes stay one line per failure
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr, leave=False)
                try:
                    while True:
                        block = response.read1(1 << 16)  # what has arrived: the deadline is checked between reads
                        if not block:
                            break
                        fh.write(block)
                        digest.update(block)
                        received += len(block)
                        if received > limit:
                            raise DownloadError(f"download of {url} sent more than the {limit} bytes {said}; stopped and deleted")
                        if time.monotonic() > deadline:
                            raise DownloadError(
                                f"download of {url} took longer than {download_deadline():g} s in all "
                                f"({received} bytes arrived; set {ENV_DEADLINE} to allow more)"
                            )
                        if bar is not None:
                            bar.update(len(block))
                finally:
                    if bar is not None:
                        bar.close()
            if total is not None and received != total:
                raise DownloadError(f"download of {url} was cut short: {received} of {total} bytes arrived")
            fh.flush()
            os.fsync(fh.fileno())
        actual = digest.hexdigest()
        if actual != sha256:
            raise DownloadError(f"download of {url} has sha256 {actual}, expected {sha256}; the file was deleted")
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise _timed_out(url, timeout) from None
        raise DownloadError(f"cannot download {url}: {one_line(exc.reason) if exc.reason else one_line(exc)}") from None
    except TimeoutError:
        raise _timed_out(url, timeout) from None
    except http.client.IncompleteRead:
        announced = f" of {total}" if total is not None else ""
        raise DownloadError(f"download of {url} was cut short: {received}{announced} bytes arrived") from None
    except http.client.HTTPException as exc:
        raise DownloadError(f"cannot download {url}: {type(exc).__name__} {one_line(exc)}") from None
    except ConnectionError as exc:
        raise DownloadError(f"cannot download {url}: {one_line(exc)}") from None
    except OSError as exc:
        raise DownloadError(f"cannot download {url} into {dest.parent}: {exc.strerror or one_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest
