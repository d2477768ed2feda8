"""HTTP fetching for stage `images`: TLS verified, redirects capped, transient failures retried with backoff.

Only transient failures are retried (429, 5xx, connection resets, timeouts); 403, 404 and every other answer are
final. The result is raw bytes: whether they are an image is decided by `m2m.data.images` from the bytes, never from
the URL or the Content-Type.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests
import urllib3

from m2m.data.images import Obtained
from m2m.params import ImagesParams

RETRY_HTTP = frozenset({429, *range(500, 600)})
TRANSIENT = frozenset({"timeout", "connection_error"} | {f"http_{code}" for code in RETRY_HTTP})
#: Larger bodies are refused: Fitzpatrick17k's photos are well under 10 MiB, so this only stops runaway responses.
MAX_BYTES = 64 << 20
CHUNK_BYTES = 1 << 16


class Fetcher:
    """Fetches URLs with the `images.*` policy; safe to share between threads (one Session per thread)."""

    def __init__(self, params: ImagesParams, sleep: Callable[[float], None] = time.sleep):
        self.params = params
        self._sleep = sleep
        self._local = threading.local()

    def fetch(self, url: str) -> Obtained:
        """GET `url`, retrying transient failures `retries` times after `backoff_s * 2**k` seconds (k = 0, 1, ...)."""
        attempt = 0
        while True:
            attempt += 1
            status, data = self._attempt(url)
            if status not in TRANSIENT or attempt > self.params.retries:
                return Obtained(status, attempt, data)
            self._sleep(self.params.backoff_s * 2 ** (attempt - 1))

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.params.user_agent
            session.max_redirects = self.params.max_redirects
            self._local.session = session
        return session

    def _attempt(self, url: str) -> tuple[str, bytes]:
        """One GET: ("ok", body) or (failure status, b"")."""
        timeout = (self.params.timeout_s, self.params.timeout_s)  # connect, and each read of the body
        try:
            with self._session().get(url, timeout=timeout, stream=True, verify=True) as response:
                if response.status_code != 200:
                    return f"http_{response.status_code}", b""
                return _read_body(response)
        except requests.TooManyRedirects:
            return "too_many_redirects", b""
        except requests.exceptions.SSLError:
            return "tls_error", b""
        except requests.Timeout:
            return "timeout", b""
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
            return ("timeout" if _is_read_timeout(err) else "connection_error"), b""
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema):
            return "bad_url", b""
        except requests.RequestException:  # e.g. a malformed redirect or an undecodable Content-Encoding
            return "request_error", b""


def _read_body(response: requests.Response) -> tuple[str, bytes]:
    chunks, size = [], 0
    for chunk in response.iter_content(CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_BYTES:
            return "too_large", b""
        chunks.append(chunk)
    return "ok", b"".join(chunks)


def _is_read_timeout(err: Exception) -> bool:
    """requests reports a body that stalls past the read timeout as a ConnectionError wrapping urllib3's timeout."""
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in err.args)
