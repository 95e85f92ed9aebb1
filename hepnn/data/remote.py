"""Remote input files: ``root://`` (XRootD) URLs, expanded and checked on the server.

XRootD URLs are read through fsspec with the fsspec-xrootd backend (``pip install hepnn[xrootd]``,
which brings ``fsspec-xrootd`` and the ``xrootd`` client bindings). uproot 5 reads every string
path through fsspec by default, so ``uproot.open(url, **uproot_open_options(url))`` is all a reader
needs; the options pin that handler and a request timeout.

Every XRootD request (a stat, a directory listing, a file open, a vector read) gives up after
``HEPNN_XROOTD_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT`), so an unreachable server is
reported in seconds instead of the client's defaults (30 minutes per request).

Paths on an XRootD server are absolute: ``root://host//data/a.root`` names ``/data/a.root``.
``root://host/data/a.root`` is read the same way and ``xroot://`` is an alias of ``root://``; URLs
come back in the canonical form ``root://host//data/a.root``. In an XRootD URL ``?`` starts the
options (``?key=value``), so globs use ``*`` and ``[...]`` only.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import re
from dataclasses import dataclass

from hepnn.errors import InputError

TIMEOUT_ENV = "HEPNN_XROOTD_TIMEOUT"
DEFAULT_TIMEOUT = 5
XROOTD_SCHEMES = ("root", "xroot")
INSTALL_HINT = "install hepnn[xrootd] (pip install fsspec-xrootd xrootd)"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class RemoteInputError(InputError):
    """A remote input file or glob cannot be resolved: no match, missing, unreachable, no client."""


@dataclass(frozen=True)
class XRootDUrl:
    """An XRootD URL split into host (``user@host:port``), absolute path and options (after ``?``)."""

    hostid: str
    path: str
    query: str = ""

    @classmethod
    def parse(cls, url: str) -> XRootDUrl:
        """Split ``root://hostid/path?query`` (or ``xroot://``); the path is made absolute."""
        rest = url.split("://", 1)[1]
        hostid, _, tail = rest.partition("/")
        path, _, query = tail.partition("?")
        return cls(hostid=hostid, path="/" + path.lstrip("/"), query=query)

    def url(self, path: str | None = None) -> str:
        """The canonical ``root://hostid//path?query`` URL, for this path or another on the same host."""
        query = f"?{self.query}" if self.query else ""
        return f"root://{self.hostid}/{path or self.path}{query}"


def scheme(path: str) -> str | None:
    """The lower-case URL scheme of ``path`` (``root`` for ``root://...``), None for a plain path."""
    match = _SCHEME.match(str(path))
    return match.group(1).lower() if match else None


def is_remote(path: str) -> bool:
    """True for a URL read over the network (``root://``, ``xroot://``, ``https://``, ...), not ``file://``."""
    return scheme(path) not in (None, "file")


def is_xrootd(path: str) -> bool:
    """True for an XRootD URL (``root://`` or ``xroot://``)."""
    return scheme(path) in XROOTD_SCHEMES


def xrootd_timeout() -> int:
    """Seconds each XRootD request may take: ``$HEPNN_XROOTD_TIMEOUT``, or :data:`DEFAULT_TIMEOUT`."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise RemoteInputError(f"{TIMEOUT_ENV} must be a positive whole number of seconds, got {value!r}")
    return seconds


def uproot_open_options(path: str) -> dict:
    """Keyword arguments for ``uproot.open(path, ...)`` (and ``uproot.iterate``); empty for local files.

    For XRootD URLs: the fsspec handler (fsspec-xrootd) and the per-request ``timeout``, which
    uproot passes on to the fsspec file system. Other URLs keep uproot's defaults.
    """
    if not is_xrootd(path):
        return {}
    import uproot.source.fsspec

    _tune_xrootd_client()
    return {"handler": uproot.source.fsspec.FSSpecSource, "timeout": xrootd_timeout()}


def expand_remote(pattern: str, key: str) -> list[str]:
    """The files a remote URL names: a glob expanded on the server (sorted), or the URL itself.

    A URL without glob characters is checked to exist on the server. XRootD URLs come back in
    canonical form (``root://host//path``). Other schemes (``https://``, ...) are returned as given
    and checked when opened; they cannot hold globs. Raises :class:`RemoteInputError` naming ``key``
    and the URL when nothing matches, the file is missing, the server does not answer within
    :func:`xrootd_timeout` seconds, or the XRootD client is not installed.
    """
    if not is_xrootd(pattern):
        if glob.has_magic(pattern):
            raise RemoteInputError(
                f"{key}: cannot expand the glob {pattern!r}: globs are supported for local paths and "
                "root:// URLs only; list the files instead"
            )
        return [pattern]
    url = XRootDUrl.parse(pattern)
    fs = _xrootd_filesystem(url, pattern, key)
    _check_reachable(url, pattern, key)
    if glob.has_magic(url.path):
        return _glob_xrootd(fs, url, pattern, key)
    _check_exists(fs, url, pattern, key)
    return [url.url()]


@functools.cache
def _tune_xrootd_client() -> None:
    """Make the XRootD client check request timeouts every second (its default is every 15 s).

    Without this a ``timeout`` of a few seconds fires only after up to 15 s. A value set in the
    shell (``XRD_TIMEOUTRESOLUTION``) wins.
    """
    from XRootD import client

    client.EnvPutInt("TimeoutResolution", 1)


def _require_xrootd(pattern: str, key: str) -> None:
    """Import the XRootD client and fsspec-xrootd, or raise naming ``key``, the URL and the fix."""
    for module in ("XRootD.client", "fsspec_xrootd"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise RemoteInputError(
                f"{key}: reading {pattern!r} needs the XRootD client, but {module} cannot be "
                f"imported ({exc}); {INSTALL_HINT}"
            ) from None


def _xrootd_filesystem(url: XRootDUrl, pattern: str, key: str):
    """An fsspec-xrootd file system for the URL's host, with the short timeout and no listing cache.

    Listings are not cached, so a glob sees files written since the last expansion.
    """
    _require_xrootd(pattern, key)
    _tune_xrootd_client()
    import fsspec

    return fsspec.filesystem("root", hostid=url.hostid, timeout=xrootd_timeout(), use_listings_cache=False)


def _check_reachable(url: XRootDUrl, pattern: str, key: str) -> None:
    """Ping the server, raising when it does not answer within the timeout.

    A glob would otherwise come back empty from an unreachable server (fsspec ignores errors
    while walking directories), and the user would read "no match" instead of "unreachable".
    """
    from XRootD import client

    timeout = xrootd_timeout()
    status, _ = client.FileSystem(f"root://{url.hostid}").ping(timeout=timeout)
    if not status.ok:
        raise RemoteInputError(
            f"{key}: cannot reach the XRootD server {url.hostid} for {pattern!r} within {timeout} s "
            f"({status.message.strip()}); expected a running server at that host and port "
            f"(a slow server may need a larger {TIMEOUT_ENV})"
        )


def _glob_xrootd(fs, url: XRootDUrl, pattern: str, key: str) -> list[str]:
    """Expand the glob in ``url.path`` on the server: sorted URLs of the matching files."""
    try:
        found = fs.glob(url.path, detail=True)
    except OSError as exc:
        raise RemoteInputError(
            f"{key}: cannot list the files matching {pattern!r} on the server: {exc}"
        ) from exc
    files = sorted(path for path, info in found.items() if info.get("type") == "file")
    if not files:
        raise RemoteInputError(
            f"{key}: no remote file matches {pattern!r} (glob {url.path!r} on {url.hostid}); "
            "expected at least one file"
        )
    return [url.url(path) for path in files]


def _check_exists(fs, url: XRootDUrl, pattern: str, key: str) -> None:
    """Raise unless ``url.path`` is a file on the server."""
    try:
        exists = fs.exists(url.path)
        kind = fs.info(url.path).get("type") if exists else None
    except OSError as exc:
        raise RemoteInputError(f"{key}: cannot stat {pattern!r} on the XRootD server: {exc}") from exc
    if not exists:
        raise RemoteInputError(
            f"{key}: remote file {pattern!r} does not exist: expected a file {url.path!r} on the XRootD "
            f"server {url.hostid}"
        )
    if kind != "file":
        raise RemoteInputError(f"{key}: {pattern!r} is a {kind} on the XRootD server, expected a file")
