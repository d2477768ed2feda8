"""Stage `images`: only verified files land, the ledger tells why each row did or did not, and runs resume.

Downloads are served by a loopback HTTP server started here (127.0.0.1 only), with tiny timeouts and backoff.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from m2m.cli import app
from m2m.cli.images import images_params
from m2m.data import download, images
from m2m.params import ImagesParams

ROOT = Path(__file__).resolve().parents[1]
POLICY = ImagesParams(source="download", concurrency=4, timeout_s=1.0, retries=2, backoff_s=0.01, max_redirects=2,
                      user_agent="m2m-test-agent/1.0")


def encoded(color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format=fmt)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fake_hash(name: str) -> str:
    return md5(name.encode())


# --- the loopback server: path -> responses in order (the last one repeats) ---------------------------------------

def send(status: int, body: bytes = b"", content_type: str = "image/jpeg", **headers):
    def respond(handler):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def slowly(seconds: float, respond):
    def delayed(handler):
        time.sleep(seconds)
        respond(handler)

    return delayed


def stall_mid_body(body: bytes):
    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:50])
        handler.wfile.flush()
        handler.server.release.wait(10)

    return respond


def drip(body: bytes, every_s: float):
    """Send the body one byte at a time, each well within the read timeout: only an overall deadline ends it."""
    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for i in range(len(body)):
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            if handler.server.release.wait(every_s):
                return

    return respond


def stall_before_headers(handler):
    handler.server.release.wait(10)


def reset_connection(handler):
    """Abort the TCP connection (RST) without an answer."""
    handler.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.request.close()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        with server.lock:
            server.hits[self.path] += 1
            server.user_agents.add(self.headers.get("User-Agent"))
            responses = server.routes.get(self.path, [send(404, b"no route", "text/plain")])
            respond = responses[min(server.hits[self.path], len(responses)) - 1]
        respond(self)

    def log_message(self, *args):  # keep test output clean
        pass


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, list] = {}
        self.hits: Counter = Counter()
        self.user_agents: set = set()
        self.lock = threading.Lock()
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def handle_error(self, request, client_address):  # reset connections make the handler fail on purpose
        pass


@pytest.fixture
def server(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    srv = LoopbackServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


# --- the served cases ------------------------------------------------------------------------------------------------

GOOD = encoded((200, 80, 60))
ATLAS = encoded((60, 80, 200))
FLAKY = encoded((90, 200, 60))
TARGET = encoded((20, 20, 20))
PNG = encoded((250, 250, 0), "PNG")
MISMATCHED = encoded((123, 45, 67))


def fast_cases() -> dict[str, tuple]:
    """name -> (path, responses, md5hash, expected status, expected attempts, expected file bytes or None)."""
    return {
        "good": ("/good.jpg", [send(200, GOOD)], md5(GOOD), "ok", 1, GOOD),
        "no_extension": ("/img?imageId=6907", [send(200, ATLAS, "text/html; charset=utf-8")], md5(ATLAS), "ok", 1,
                         ATLAS),
        "png_as_jpg": ("/really-a-png.jpg", [send(200, PNG)], md5(PNG), "ok", 1, PNG),
        "html": ("/error-page.jpg", [send(200, b"<html><body>Not found</body></html>", "image/jpeg")],
                 fake_hash("html"), "not_an_image", 1, None),
        "truncated": ("/truncated.jpg", [send(200, GOOD[: len(GOOD) // 2])], fake_hash("truncated"), "truncated", 1,
                      None),
        "empty": ("/empty.jpg", [send(200, b"")], fake_hash("empty"), "empty", 1, None),
        "flaky": ("/flaky.jpg", [send(503), send(503), send(200, FLAKY)], md5(FLAKY), "ok", 3, FLAKY),
        "not_found": ("/gone.jpg", [send(404, b"gone", "text/html")], fake_hash("404"), "http_404", 1, None),
        "forbidden": ("/forbidden.jpg", [send(403, b"no", "text/html")], fake_hash("403"), "http_403", 1, None),
        "rate_limited": ("/busy.jpg", [send(429)], fake_hash("429"), "http_429", 3, None),
        "redirect": ("/old.jpg", [send(302, Location="/new/target.jpg")], md5(TARGET), "ok", 1, TARGET),
        "redirect_target": ("/new/target.jpg", [send(200, TARGET)], None, None, None, None),
        "redirect_loop": ("/loop", [send(301, Location="/loop")], fake_hash("loop"), "too_many_redirects", 1, None),
        "reset": ("/reset.jpg", [reset_connection], fake_hash("reset"), "connection_error", 3, None),
        "md5_mismatch": ("/mismatch.jpg", [send(200, MISMATCHED)], fake_hash("mismatch"), "ok", 1, MISMATCHED),
        "no_url": (None, [], fake_hash("no url"), "no_url", 0, None),
    }


def stalling_cases() -> dict[str, tuple]:
    return {
        "stall_body": ("/stall-body.jpg", [stall_mid_body(GOOD)], fake_hash("stall body"), "timeout", 3, None),
        "stall_headers": ("/stall-headers.jpg", [stall_before_headers], fake_hash("stall headers"), "timeout", 3,
                          None),
    }


def serve(server: LoopbackServer, cases: dict[str, tuple]) -> pd.DataFrame:
    """Register the cases' routes; return the CSV rows (md5hash, url) of the cases that are rows."""
    rows = []
    for path, responses, md5hash, *_ in cases.values():
        if path is not None:
            server.routes[path] = responses
        if md5hash is not None:
            rows.append((md5hash, server.url(path) if path else ""))
    return pd.DataFrame(rows, columns=["md5hash", "url"])


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sniff_uses_bytes_only():
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"),
                     ("TIFF", "tif")):
        assert images.sniff(encoded((1, 2, 3), fmt))[0] == ext
        assert images.check_image(encoded((1, 2, 3), fmt)) == ("ok", ext)
    assert images.sniff(b"<!DOCTYPE html>") is None
    assert images.check_image(b"\xff\xd8\xff" + b"\x00" * 100)[0] in ("corrupt", "truncated")
    assert images.check_image(PNG[:-30]) == ("truncated", "png")


def test_refuses_to_verify_with_load_truncated_images(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(images.M2MError, match="LOAD_TRUNCATED_IMAGES"):
        images.check_image(GOOD)


def test_download_lands_only_verified_files_and_ledgers_every_row(server, tmp_path):
    cases = {**fast_cases(), **stalling_cases()}
    rows = serve(server, cases)
    ledger = images.obtain_images(rows, tmp_path / "out", POLICY)

    assert list(ledger.md5hash) == list(rows.md5hash)  # CSV order
    by_hash = ledger.set_index("md5hash")
    expected_files = {"ledger.csv"}
    for name, (_path, _responses, md5hash, status, attempts, data) in cases.items():
        if md5hash is None:
            continue
        row = by_hash.loc[md5hash]
        assert (row.status, row.attempts) == (status, attempts), name
        if data is None:
            assert row.file == "", name
            continue
        ext = images.sniff(data)[0]
        assert row.file == f"{md5hash}.{ext}", name
        assert (tmp_path / "out" / row.file).read_bytes() == data, name
        assert (row.bytes, row.md5, row.md5_match) == (len(data), md5(data), str(md5(data) == md5hash).lower()), name
        expected_files.add(row.file)
    assert set(folder_files(tmp_path / "out")) == expected_files  # no temporary or rejected files
    assert pd.read_csv(tmp_path / "out/ledger.csv", dtype=str, keep_default_na=False).equals(ledger.astype(str))
    assert server.hits["/gone.jpg"] == 1 and server.hits["/forbidden.jpg"] == 1  # 403/404 are not retried
    assert server.user_agents == {POLICY.user_agent}


def test_retry_waits_as_long_as_the_server_asks(server):
    server.routes["/later.jpg"] = [send(429, **{"Retry-After": "5"}), send(503, **{"Retry-After": "soon"}),
                                   send(200, GOOD)]
    waits = []
    obtained = download.Fetcher(POLICY, sleep=waits.append).fetch(server.url("/later.jpg"))
    assert (obtained.status, obtained.attempts, obtained.data) == ("ok", 3, GOOD)
    assert waits == [5.0, POLICY.backoff_s * 2]  # the server's 5 s, then the backoff (unreadable Retry-After)


def test_a_dripping_body_ends_at_the_attempt_deadline(server):
    server.routes["/drip.jpg"] = [drip(GOOD, every_s=0.02)]  # GOOD takes ~15 s to drip; the deadline is 1 s
    policy = dataclasses.replace(POLICY, timeout_s=0.1, retries=0)
    start = time.monotonic()
    obtained = download.Fetcher(policy).fetch(server.url("/drip.jpg"))
    assert (obtained.status, obtained.attempts, obtained.data) == ("timeout", 1, b"")
    assert time.monotonic() - start < download.DEADLINE_PER_TIMEOUT * policy.timeout_s + 2


def test_retry_after_header_values():
    now = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)
    assert download.retry_after_s("7") == 7.0
    assert download.retry_after_s("86400") == download.MAX_RETRY_AFTER_S
    assert download.retry_after_s("Fri, 04 Dec 2026 12:00:30 GMT", now) == 30.0
    assert download.retry_after_s("Fri, 04 Dec 2026 11:00:00 GMT", now) == 0.0  # already past
    assert download.retry_after_s("soon") == download.retry_after_s(None) == 0.0


def test_strict_md5_rejects_mismatches_even_on_resume(server, tmp_path):
    rows = serve(server, {k: v for k, v in fast_cases().items() if k in ("good", "md5_mismatch")})
    lenient = images.obtain_images(rows, tmp_path, POLICY)
    assert list(lenient.status) == ["ok", "ok"] and list(lenient.md5_match) == ["true", "false"]
    strict = images.obtain_images(rows, tmp_path, ImagesParams(**{**vars(POLICY), "strict_md5": True}))
    assert list(strict.status) == ["ok", "md5_mismatch"]
    assert set(folder_files(tmp_path)) == {"ledger.csv", f"{md5(GOOD)}.jpg"}


def test_rerun_fetches_only_what_is_not_verified(server, tmp_path):
    rows = serve(server, fast_cases())
    first = images.obtain_images(rows, tmp_path, POLICY)
    files = folder_files(tmp_path)
    hits = Counter(server.hits)
    second = images.obtain_images(rows, tmp_path, POLICY)

    kept = first.file != ""
    refetched = {path for path, _r, md5hash, *_ in fast_cases().values()
                 if md5hash in set(first.md5hash[~kept]) and path}
    assert {p for p in server.hits if server.hits[p] != hits[p]} == refetched
    assert second[kept].equals(first[kept])
    assert folder_files(tmp_path) == {**files, "ledger.csv": (tmp_path / "ledger.csv").read_bytes()}


def reference_run(server: LoopbackServer, rows: pd.DataFrame, out: Path) -> dict[str, bytes]:
    server.hits.clear()
    images.obtain_images(rows, out, POLICY)
    server.hits.clear()  # the restarted run meets the same server behaviour as the reference run
    return folder_files(out)


def test_run_killed_by_an_error_restarts_to_the_same_end(server, tmp_path, monkeypatch):
    rows = serve(server, fast_cases())
    reference = reference_run(server, rows, tmp_path / "reference")
    calls = itertools.count()
    original = download.Fetcher.fetch

    def dies_on_the_sixth_call(self, url):
        if next(calls) == 5:
            raise RuntimeError("killed")
        return original(self, url)

    with monkeypatch.context() as patch:
        patch.setattr(images, "LEDGER_FLUSH_S", 0.0)
        patch.setattr(download.Fetcher, "fetch", dies_on_the_sixth_call)
        with pytest.raises(RuntimeError, match="killed"):
            images.obtain_images(rows, tmp_path / "out", POLICY)
    assert 0 < len(pd.read_csv(tmp_path / "out/ledger.csv")) < len(rows)
    server.hits.clear()
    images.obtain_images(rows, tmp_path / "out", POLICY)
    assert folder_files(tmp_path / "out") == reference


def test_run_killed_between_ledger_and_rename_restarts_to_the_same_end(server, tmp_path, monkeypatch):
    rows = serve(server, fast_cases())
    reference = reference_run(server, rows, tmp_path / "reference")
    moves = itertools.count()
    original = images._move_into_place

    def dies_on_the_third_rename(temp, final):
        if next(moves) >= 2:
            raise RuntimeError("killed")
        original(temp, final)

    with monkeypatch.context() as patch:
        patch.setattr(images, "LEDGER_FLUSH_S", 0.0)
        patch.setattr(images, "_move_into_place", dies_on_the_third_rename)
        with pytest.raises(RuntimeError, match="killed"):
            images.obtain_images(rows, tmp_path / "out", POLICY)
    assert any(name.endswith(".part") for name in os.listdir(tmp_path / "out"))  # ledgered, not yet renamed
    server.hits.clear()
    images.obtain_images(rows, tmp_path / "out", POLICY)
    assert folder_files(tmp_path / "out") == reference


def test_standalone_command_killed_with_sigkill_restarts_to_the_same_end(server, tmp_path):
    """`m2m images` on a plain md5hash,url CSV without a params file; SIGKILL mid-download; restart."""
    bodies = [encoded((i * 7, 255 - i * 7, 128)) for i in range(32)]
    for i, body in enumerate(bodies):
        server.routes[f"/{i}.jpg"] = [slowly(0.15, send(200, body))]
    server.routes["/gone.jpg"] = [send(404)]
    rows = [(md5(b), server.url(f"/{i}.jpg")) for i, b in enumerate(bodies)]
    rows.append((fake_hash("x"), server.url("/gone.jpg")))
    pd.DataFrame(rows, columns=["md5hash", "url"]).to_csv(tmp_path / "urls.csv", index=False)
    args = ["images", "--csv", str(tmp_path / "urls.csv"), "--params", str(tmp_path / "absent.yaml"),
            "--concurrency", "2", "--timeout-s", "5", "--retries", "0"]

    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "reference")])
    assert result.exit_code == 0, result.output
    assert "32/33 kept (ok 32, http_404 1)" in result.output

    out = tmp_path / "out"
    process = subprocess.Popen([str(Path(sys.executable).with_name("m2m")), *args, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (out / "ledger.csv").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert len(pd.read_csv(out / "ledger.csv")) < len(rows), "the run finished before it was killed"

    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert folder_files(out) == folder_files(tmp_path / "reference")


def test_folder_source_verifies_and_copies(tmp_path):
    source = tmp_path / "given"
    source.mkdir()
    (source / f"{md5(GOOD)}.jpg").write_bytes(GOOD)
    (source / f"{fake_hash('cut')}.jpg").write_bytes(GOOD[:300])
    (source / f"{md5(PNG)}.jpg").write_bytes(PNG)  # misnamed: lands under its real type
    rows = pd.DataFrame({"md5hash": [md5(GOOD), fake_hash("cut"), fake_hash("absent"), md5(PNG)]})
    ledger = images.obtain_images(rows, tmp_path / "out", ImagesParams(source="folder", folder=str(source)))
    assert list(ledger.status) == ["ok", "truncated", "missing_in_folder", "ok"]
    assert folder_files(tmp_path / "out") == {f"{md5(GOOD)}.jpg": GOOD, f"{md5(PNG)}.png": PNG,
                                              "ledger.csv": (tmp_path / "out/ledger.csv").read_bytes()}


def fake_miniworld(monkeypatch) -> list:
    calls = []

    def render_image(md5hash: str, label: str, fitzpatrick_scale: int, size: int) -> Image.Image:
        calls.append((md5hash, label, fitzpatrick_scale, size))
        return Image.new("RGB", (size, size), (fitzpatrick_scale * 40, len(label), int(md5hash[:2], 16)))

    monkeypatch.setitem(sys.modules, "m2m.data.miniworld", types.SimpleNamespace(render_image=render_image))
    return calls


def test_mini_source_renders_png(tmp_path, monkeypatch):
    calls = fake_miniworld(monkeypatch)
    rows = pd.DataFrame({"md5hash": [fake_hash("a"), fake_hash("b")], "label": ["psoriasis", "folliculitis"],
                         "fitzpatrick_scale": [1, 6]})
    ledger = images.obtain_images(rows, tmp_path, ImagesParams(source="mini", render_size=16))
    assert sorted(calls) == sorted([(fake_hash("a"), "psoriasis", 1, 16), (fake_hash("b"), "folliculitis", 6, 16)])
    assert list(ledger.status) == ["rendered", "rendered"] and list(ledger.md5_match) == ["", ""]
    assert list(ledger.file) == [f"{fake_hash('a')}.png", f"{fake_hash('b')}.png"]
    with Image.open(tmp_path / ledger.file[0]) as image:
        assert image.size == (16, 16)


def study_rows(params: dict) -> pd.DataFrame:
    """One row per condition x Fitzpatrick type of the study: the smallest subset the splits can use at 1 seed."""
    data = params["data"]
    cells = itertools.product(data["conditions"], [*data["light_fst"], *data["dark_fst"]])
    return pd.DataFrame([(fake_hash(f"{c}{f}"), c, f) for c, f in cells],
                        columns=["md5hash", "label", "fitzpatrick_scale"])


def test_stage_reports_coverage_and_stops_on_shortfalls(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["splits"]["n_seed_images"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rows = study_rows(params)
    rows.to_csv(tmp_path / "subset.csv", index=False)
    given = tmp_path / "given"
    given.mkdir()
    for md5hash in rows.md5hash:
        (given / f"{md5hash}.jpg").write_bytes(GOOD)
    args = ["images", "--csv", str(tmp_path / "subset.csv"), "--out", str(tmp_path / "images"), "--report",
            str(tmp_path / "images.md"), "--params", str(tmp_path / "params.yaml"), "--source", "folder",
            "--folder", str(given)]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = (tmp_path / "images.md").read_text()
    assert "| VI | 1 / 1 | 1 / 1 |" in report and "28 / 28 |" in report and "1 differ" not in report

    missing = rows[(rows.label == "psoriasis") & (rows.fitzpatrick_scale == 6)].md5hash.item()
    (given / f"{missing}.jpg").unlink()
    shutil.rmtree(tmp_path / "images")  # else the copy verified by the first run would stand
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "psoriasis, FST 6: none obtained" in result.output
    assert "psoriasis, dark FST 5+6: 1 obtained, needs at least 2" in result.output
    assert "| VI | 1 / 1 | 1 / 1 | 1 / 1 | 1 / 1 | 1 / 1 | 0 / 1 |" in (tmp_path / "images.md").read_text()
    ledger = pd.read_csv(tmp_path / "images/ledger.csv").set_index("md5hash")
    assert len(ledger) == 28 and ledger.status[missing] == "missing_in_folder"


def test_options_override_params_file_or_builtin_defaults(tmp_path):
    assert images_params(tmp_path / "absent.yaml", {"retries": None}) == ImagesParams()
    assert images_params(tmp_path / "absent.yaml", {"retries": 0}).retries == 0
    from_file = images_params(ROOT / "params.yaml", {"concurrency": 2})
    assert from_file.source == yaml.safe_load((ROOT / "params.yaml").read_text())["images"]["source"]
    assert from_file.concurrency == 2


def test_bad_csv_is_one_clear_error(tmp_path):
    pd.DataFrame({"md5hash": ["../../etc/passwd"], "url": ["http://127.0.0.1/x"]}).to_csv(tmp_path / "b.csv")
    result = CliRunner().invoke(app, ["images", "--csv", str(tmp_path / "b.csv"), "--out", str(tmp_path / "o"),
                                      "--params", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "md5hash is not 32 lower-case hex digits in data row(s) 1" in result.output
    assert not (tmp_path / "o").exists()
