"""Shared helpers for the download scripts: resumable, verified downloads and safe unzipping.

- ``download`` fetches into ``<dest>.part``, resumes an interrupted ``.part`` with an HTTP
  ``Range`` request, verifies the published checksum (MD5 or SHA-256) and only then renames the
  file to ``dest``: a file at ``dest`` is always complete and verified.
- Network problems raise :class:`DownloadError` quickly (connection timeout 10 s by default)
  with a message that says what to do, instead of hanging.
- ``extract_zip`` refuses members that would land outside the target folder and extracts into a
  staging folder that is renamed after success.
- No script destroys a file it did not write in the same run: a file that fails its check (a
  checksum, an unexpected row count) is moved aside with :func:`move_aside`, which says where.

Standard library only (plus tqdm for the progress bar), so the scripts run wherever fedlib does.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm

__all__ = [
    "DEFAULT_TIMEOUT",
    "ChecksumError",
    "DownloadError",
    "download",
    "extract_zip",
    "fail",
    "fetch_json",
    "file_digest",
    "move_aside",
    "verify_checksum",
]

DEFAULT_TIMEOUT = 10.0
CHUNK_SIZE = 1 << 20
USER_AGENT = "fedlib-data-scripts"


class DownloadError(RuntimeError):
    """A download could not be completed; the message says why and what to do."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the published checksum."""


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (``"md5"`` or ``"sha256"``), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(
    path: Path, *, md5: str | None = None, sha256: str | None = None, name: str | None = None
) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches every checksum given.

    ``name`` is how the file is called in the message (default: its file name).
    """
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        actual = file_digest(path, algorithm)
        if actual.lower() != expected.lower():
            raise ChecksumError(
                f"{name or path.name}: {algorithm} is {actual}, the published value is "
                f"{expected}."
            )


def _network_error(url: str, timeout: float, reason: object, dest: Path | None = None
                   ) -> DownloadError:
    host = urlparse(url).netloc or url
    message = (
        f"could not download from {host}: {reason} (network timeout {timeout:g} s). Check the "
        "network connection (behind a proxy, set HTTPS_PROXY)"
    )
    if dest is not None:
        message += f", or download {url} by hand to {dest} and run the script again"
    return DownloadError(message + ".")


def _open(url: str, timeout: float, offset: int):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified); return ``dest``.

    An existing ``dest`` that matches the checksums is kept (no network access). Without any
    published checksum, the file's SHA-256 is printed so that it can be recorded.
    ``timeout`` bounds the connection and every read (seconds without data).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        try:
            verify_checksum(dest, md5=md5, sha256=sha256)
            return dest
        except ChecksumError as error:
            move_aside(dest, f"does not match its published checksum ({error})")
            print(f"{dest.name}: downloading it again.", file=sys.stderr)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, timeout, offset)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            response = None  # the .part already holds the whole file: verify it below
        else:
            raise DownloadError(f"{url}: HTTP {error.code} {error.reason}.") from error
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise _network_error(url, timeout, reason, dest) from error

    if response is not None:
        with response:
            resumed = offset > 0 and response.status == 206
            if not resumed:
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=dest.name, disable=not progress, leave=False)
            try:
                with open(part, "ab" if resumed else "wb") as stream, bar:
                    while True:
                        chunk = response.read(CHUNK_SIZE)
                        if not chunk:
                            break
                        stream.write(chunk)
                        bar.update(len(chunk))
            except (TimeoutError, ConnectionError, OSError, http.client.HTTPException) as error:
                raise DownloadError(
                    f"{url}: the transfer stopped ({error}); the partial file {part} is kept and "
                    "the next run resumes from it."
                ) from error
        if total is not None and part.stat().st_size != total:
            raise DownloadError(
                f"{url}: received {part.stat().st_size} of {total} bytes; the partial file is "
                "kept and the next run resumes from it."
            )
    try:
        verify_checksum(part, md5=md5, sha256=sha256, name=dest.name)
    except ChecksumError as error:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{error} The download from {url} is corrupt or the file changed upstream; it was "
            "deleted, run the script again to retry."
        ) from None
    if md5 is None and sha256 is None:
        print(f"{dest.name}: no published checksum to verify; sha256 {file_digest(part, 'sha256')}",
              file=sys.stderr)
    os.replace(part, dest)
    return dest


def fetch_json(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """GET a JSON document (e.g. a repository's file list), failing fast when offline."""
    try:
        with _open(url, timeout, 0) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}.") from error
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        raise _network_error(url, timeout, getattr(error, "reason", error)) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DownloadError(f"{url}: the answer is not JSON ({error}).") from error


def extract_zip(zip_path: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Extract ``zip_path`` so that its content ends up in the folder ``target``.

    If the archive holds a single top-level folder, that folder becomes ``target``; otherwise
    the top level of the archive does. Members with absolute paths or ``..`` are refused.
    Extraction goes to ``<target>.partial`` first; an existing ``target`` is left untouched.
    """
    zip_path, target = Path(zip_path), Path(target)
    if target.is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    root = staging.resolve()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.infolist():
                destination = (root / member.filename).resolve()
                if not destination.is_relative_to(root) or destination == root:
                    if member.filename.rstrip("/") in ("", "."):
                        continue
                    raise DownloadError(
                        f"{zip_path}: refused member {member.filename!r} (outside the target)."
                    )
                archive.extract(member, staging)
    except zipfile.BadZipFile as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{zip_path}: not a valid zip archive ({error}); delete it and run "
                            "again.") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    entries = [e for e in staging.iterdir() if e.name != "__MACOSX"]
    source = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
    os.replace(source, target)
    if staging.exists():
        shutil.rmtree(staging)
    return target


def move_aside(path: str | os.PathLike[str], reason: str) -> Path:
    """Rename ``path`` to a free name ``<name>.rejected[.N]`` next to it and say so.

    Used instead of deleting a file the script did not write in this run (it may be the user's
    own copy); returns the new path.
    """
    path = Path(path)
    target = path.with_name(path.name + ".rejected")
    count = 1
    while target.exists() or target.is_symlink():
        target = path.with_name(f"{path.name}.rejected.{count}")
        count += 1
    os.replace(path, target)
    print(f"{path}: {reason}; moved aside to {target} (nothing was deleted: check it, then "
          "delete it yourself).", file=sys.stderr)
    return target


def fail(message: str) -> int:
    """Print an error for the user and return the exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every download script takes: the data root, the timeout, the progress bar."""
    parser.add_argument("--root", help="data root (default: $FEDLIB_DATA_DIR or ~/.cache/fedlib)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="network timeout in seconds")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
