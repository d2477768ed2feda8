"""HTTP fetching for stage `images`: TLS verified, redirects capped, transient failures retried with backoff.

Only transient failures are retried (429, 5xx, connection resets, timeouts); 403, 404 and every other answer are
final. A server's `Retry-After` (seconds or an HTTP date) lengthens the wait before the next try, up to
`MAX_RETRY_AFTER_S`. Besides the per-read timeout, one attempt has an overall deadline of
`DEADLINE_PER_TIMEOUT x images.timeout_s`, so a server that drips bytes cannot hold a worker forever. The result
is raw bytes: whether they are an image is decided by `m2m.data.images` from the bytes, never from the URL or the
Content-Type.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import requests
import urllib3

from m2m.data.images import Obtained
from m2m.params import ImagesParams

RETRY_HTTP = frozenset({429, *range(500, 600)})
TRANSIENT = frozenset({"timeout", "connection_error"} | {f"http_{code}" for code in RETRY_HTTP})
#: Larger bodies are refused: Fitzpatrick17k's photos are well under 10 MiB, so this only stops runaway responses.
MAX_BYTES = 64 << 20
CHUNK_BYTES = 1 << 16
#: One attempt (connect, headers, whole body) may last this many `images.timeout_s` at most.
DEADLINE_PER_TIMEOUT = 10
#: A longer Retry-After is cut to this: the run retries sooner rather than stall for hours.
MAX_RETRY_AFTER_S = 120.0


class Fetcher:
    """Fetches URLs with the `images.*` policy; safe to share between threads (one Session per thread)."""

    def __init__(self, params: ImagesParams, sleep: Callable[[float], None] = time.sleep):
        self.params = params
        self._sleep = sleep
        self._local = threading.local()

    def fetch(self, url: str) -> Obtained:
        """GET `url`, retrying transient failures `retries` times after `backoff_s * 2**k` seconds (k = 0, 1, ...),
        or after the server's Retry-After when that is longer."""
        attempt = 0
        while True:
            attempt += 1
            status, data, retry_after = self._attempt(url)
            if status not in TRANSIENT or attempt > self.params.retries:
                return Obtained(status, attempt, data)
            self._sleep(max(self.params.backoff_s * 2 ** (attempt - 1), retry_after))

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.params.user_agent
            session.max_redirects = self.params.max_redirects
            self._local.session = session
        return session

    def _attempt(self, url: str) -> tuple[str, bytes, float]:
        """One GET: ("ok", body, 0) or (failure status, b"", seconds the server asked to wait or 0)."""
        timeout = (self.params.timeout_s, self.params.timeout_s)  # connect, and each read of the body
        deadline = time.monotonic() + DEADLINE_PER_TIMEOUT * self.params.timeout_s
        try:
            with self._session().get(url, timeout=timeout, stream=True, verify=True) as response:
                if response.status_code != 200:
                    return f"http_{response.status_code}", b"", retry_after_s(response.headers.get("Retry-After"))
                return (*_read_body(response, deadline), 0.0)
        except requests.TooManyRedirects:
            return "too_many_redirects", b"", 0.0
        except requests.exceptions.SSLError:
            return "tls_error", b"", 0.0
        except requests.Timeout:
            return "timeout", b"", 0.0
        except requests.ConnectionError:
            return "connection_error", b"", 0.0
        except urllib3.exceptions.ReadTimeoutError:  # the body, read by _read_body straight from urllib3
            return "timeout", b"", 0.0
        except urllib3.exceptions.ProtocolError:  # e.g. the connection closed before Content-Length bytes came
            return "connection_error", b"", 0.0
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema):
            return "bad_url", b"", 0.0
        except (requests.RequestException, urllib3.exceptions.HTTPError):
            return "request_error", b"", 0.0  # e.g. a malformed redirect or an undecodable Content-Encoding


def retry_after_s(value: str | None, now: datetime | None = None) -> float:
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP date), within 0..MAX_RETRY_AFTER_S; 0 when
    absent or unreadable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is read as such
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _read_body(response: requests.Response, deadline: float) -> tuple[str, bytes]:
    """The body as it arrives: "too_large" past MAX_BYTES, "timeout" past `deadline` (a `time.monotonic()` value).

    read1 returns whatever has arrived, so a body dripping in under the per-read timeout still meets the deadline
    (a 64 KiB `iter_content` read would block until its chunk was full).
    """
    chunks, size = [], 0
    while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
        size += len(chunk)
        if size > MAX_BYTES:
            return "too_large", b""
        if time.monotonic() > deadline:
            return "timeout", b""
        chunks.append(chunk)
    return "ok", b"".join(chunks)
