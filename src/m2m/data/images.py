"""Stage `images`: one verified image per CSV row, from the mini world, a download, or a local folder.

Input: a CSV with md5hash (plus url to download; plus label and fitzpatrick_scale to render the mini world or to
report coverage). Output: a folder of `<md5hash>.<ext>` files (the contract of `m2m.data.imagefolder`) and
`ledger.csv` in it, one row per CSV row: md5hash, status, attempts, bytes, md5, md5_match, file.

A file counts only once verified: its type is sniffed from its first bytes (never from the URL or Content-Type),
Pillow decodes it in full, and the MD5 of its bytes is compared with the CSV's md5hash. Each verified file is
committed in three steps: bytes to a temporary file, the ledger row (the ledger is rewritten atomically), then a
rename into place. So after a kill a restart finds every ledger row whose file, or temporary file, still holds the
recorded MD5 and fetches only the rest; it ends with the same folder and ledger as an uninterrupted run.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from m2m import io as m2m_io
from m2m.data.subset import count_table, table_markdown
from m2m.errors import M2MError
from m2m.params import DataParams, ImagesParams

LEDGER_NAME = "ledger.csv"
#: Statuses of rows whose file is in the folder: "ok" (downloaded or copied and verified), "rendered" (mini world).
KEPT = ("ok", "rendered")
REQUIRED_COLUMNS = {
    "download": ("md5hash", "url"),
    "folder": ("md5hash",),
    "mini": ("md5hash", "label", "fitzpatrick_scale"),
}
#: (leading bytes, file extension, Pillow format); WebP is recognised separately (RIFF....WEBP).
MAGIC = (
    (b"\xff\xd8\xff", "jpg", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "png", "PNG"),
    (b"GIF87a", "gif", "GIF"),
    (b"GIF89a", "gif", "GIF"),
    (b"BM", "bmp", "BMP"),
    (b"II*\x00", "tif", "TIFF"),
    (b"MM\x00*", "tif", "TIFF"),
)
EXTENSIONS = ("jpg", "png", "gif", "bmp", "tif", "webp")
#: Seconds between ledger rewrites while a run is in progress.
LEDGER_FLUSH_S = 1.0


@dataclass(frozen=True)
class Obtained:
    """What a source produced for one row: status "ok" with the bytes, or a failure status (e.g. http_404)."""

    status: str
    attempts: int
    data: bytes = b""


@dataclass(frozen=True)
class LedgerRow:
    md5hash: str
    status: str
    attempts: int = 0
    bytes: int = 0
    md5: str = ""
    md5_match: str = ""  # "true" / "false"; "" where it means nothing (rendered images, nothing obtained)
    file: str = ""  # `<md5hash>.<ext>` when the status is in KEPT


LEDGER_COLUMNS = [f.name for f in dataclasses.fields(LedgerRow)]


def sniff(data: bytes) -> tuple[str, str] | None:
    """(extension, Pillow format) from the leading bytes, or None if they are no image format we accept."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "WEBP"
    for magic, ext, fmt in MAGIC:
        if data.startswith(magic):
            return ext, fmt
    return None


def check_image(data: bytes) -> tuple[str, str]:
    """(status, extension): "ok" only if the bytes are an image of the sniffed format that decodes in full."""
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise M2MError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process: truncated images would pass "
                       "verification; unset it before running stage images")
    if not data:
        return "empty", ""
    kind = sniff(data)
    if kind is None:
        return "not_an_image", ""
    ext, fmt = kind
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            image.load()
    except Image.DecompressionBombError:
        return "too_large", ext
    except (OSError, SyntaxError, EOFError, ValueError) as err:
        return ("truncated" if "truncat" in str(err).lower() else "corrupt"), ext
    return "ok", ext


def judge(md5hash: str, got: Obtained, strict_md5: bool, rendered: bool = False) -> LedgerRow:
    """The ledger row for what a source produced; its `file` is set only if the bytes are to be kept."""
    if got.status != "ok":
        return LedgerRow(md5hash, got.status, got.attempts)
    status, ext = check_image(got.data)
    digest = hashlib.md5(got.data, usedforsecurity=False).hexdigest()
    match = "" if rendered else str(digest == md5hash).lower()
    if status == "ok" and strict_md5 and match == "false":
        status = "md5_mismatch"
    if status == "ok" and rendered:
        status = "rendered"
    file = f"{md5hash}.{ext}" if status in KEPT else ""
    return LedgerRow(md5hash, status, got.attempts, len(got.data), digest, match, file)


def read_ledger(path: Path) -> list[LedgerRow]:
    """The rows of an existing ledger ([] if there is none)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != LEDGER_COLUMNS:
            raise M2MError(f"{path}: not an images ledger (columns {reader.fieldnames}, expected {LEDGER_COLUMNS}); "
                           f"delete it to start afresh")
        try:
            return [LedgerRow(**{**r, "attempts": int(r["attempts"]), "bytes": int(r["bytes"])}) for r in reader]
        except (TypeError, ValueError) as err:
            raise M2MError(f"{path}, line {reader.line_num}: bad ledger row ({err})") from None


class Ledger:
    """`ledger.csv` of an image folder, in CSV order, rewritten atomically (so it is whole after a kill).

    Rows are written in batches, at most every `flush_every_s` seconds (rewriting the whole file per row would cost
    time quadratic in the rows); the rename that puts a row's file in place runs only after a ledger holding the row
    is on disk.
    """

    def __init__(self, path: Path, order: list[str], flush_every_s: float):
        self.path = path
        self.order = order
        self.flush_every_s = flush_every_s
        wanted = set(order)
        self._rows = {row.md5hash: row for row in read_ledger(path) if row.md5hash in wanted}
        self._pending: list[Callable[[], None]] = []
        self._written_at = time.monotonic()
        self._lock = threading.Lock()

    def get(self, md5hash: str) -> LedgerRow | None:
        return self._rows.get(md5hash)

    def rows(self) -> list[LedgerRow]:
        return [self._rows[h] for h in self.order if h in self._rows]

    def record(self, row: LedgerRow, then: Callable[[], None] | None = None) -> None:
        """Add or replace `row`; `then` runs once a ledger holding the row is on disk."""
        with self._lock:
            self._rows[row.md5hash] = row
            if then is not None:
                self._pending.append(then)
            if time.monotonic() - self._written_at >= self.flush_every_s:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        with m2m_io.atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(LEDGER_COLUMNS)
            writer.writerows(dataclasses.astuple(row) for row in self.rows())
        self._written_at = time.monotonic()
        for then in self._pending:
            then()
        self._pending.clear()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([dataclasses.asdict(row) for row in self.rows()], columns=LEDGER_COLUMNS)


def read_image_csv(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    """Read a CSV of images; check it has `columns` and unique, lower-case 32-hex md5hashes (they name files)."""
    df = pd.read_csv(path, dtype={"md5hash": str, "url": str, "label": str}, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise M2MError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns)}")
    bad = df.index[~df.md5hash.str.fullmatch(r"[0-9a-f]{32}")]
    if len(bad):
        raise M2MError(f"{path}: md5hash is not 32 lower-case hex digits in data row(s) "
                       f"{', '.join(str(i + 1) for i in bad[:10])}")
    duplicated = df.md5hash[df.md5hash.duplicated()]
    if len(duplicated):
        raise M2MError(f"{path}: duplicated md5hash {', '.join(duplicated[:5])}")
    return df


def obtain_images(rows: pd.DataFrame, out: Path, params: ImagesParams) -> pd.DataFrame:
    """Fill `out` with one verified `<md5hash>.<ext>` per obtainable row of `rows`, and write `out/ledger.csv`.

    With source download or folder, rows an earlier run verified (ledger status ok, file still holding the recorded
    MD5) are kept and not fetched again; the mini world is always rendered afresh (it is cheap and deterministic).

    Returns:
        the ledger, one row per row of `rows`, in the same order.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / LEDGER_NAME, list(rows.md5hash), LEDGER_FLUSH_S)
    obtain = _source(params)
    rendered = params.source == "mini"
    todo = [row for row in rows.itertuples(index=False)
            if rendered or not _resume(out, ledger.get(row.md5hash), params.strict_md5)]
    tasks = [functools.partial(_obtain_one, row, obtain, out, params.strict_md5, rendered, ledger) for row in todo]
    try:
        _run_parallel(tasks, params.concurrency)
    finally:
        ledger.flush()  # also on Ctrl-C: what was verified stays
    _prune(out, ledger)
    return ledger.frame()


def _source(params: ImagesParams) -> Callable[[tuple], Obtained]:
    """The function that obtains one CSV row's bytes under `images.source`."""
    if params.source == "download":
        from m2m.data.download import Fetcher

        fetcher = Fetcher(params)
        return lambda row: fetcher.fetch(row.url) if row.url else Obtained("no_url", 0)
    if params.source == "folder":
        folder = Path(params.folder)
        if not folder.is_dir():
            raise M2MError(f"images.folder {folder} is not a folder")
        return functools.partial(_read_from_folder, folder)
    from m2m.data.miniworld import render_image

    return functools.partial(_render, render_image, params.render_size)


def _read_from_folder(folder: Path, row) -> Obtained:
    from m2m.data.imagefolder import find_image

    try:
        return Obtained("ok", 0, find_image(folder, row.md5hash).read_bytes())
    except M2MError:
        return Obtained("missing_in_folder", 0)


def _render(render_image, size: int, row) -> Obtained:
    buffer = io.BytesIO()
    render_image(row.md5hash, row.label, int(row.fitzpatrick_scale), size).save(buffer, format="PNG")
    return Obtained("ok", 0, buffer.getvalue())


def _obtain_one(row, obtain, out: Path, strict_md5: bool, rendered: bool, ledger: Ledger) -> None:
    """Obtain, verify and commit one row: temporary file, then ledger row, then rename (see module docstring)."""
    got = obtain(row)
    entry = judge(row.md5hash, got, strict_md5, rendered)
    if not entry.file:
        ledger.record(entry)
        return
    final = out / entry.file
    _temp_path(final).write_bytes(got.data)
    ledger.record(entry, then=functools.partial(_move_into_place, _temp_path(final), final))


def _move_into_place(temp: Path, final: Path) -> None:
    os.replace(temp, final)


def _resume(out: Path, previous: LedgerRow | None, strict_md5: bool) -> bool:
    """Whether an earlier run's verified file can stand (finishing its rename if the run was killed before it)."""
    if previous is None or previous.status != "ok" or (strict_md5 and previous.md5_match != "true"):
        return False
    if previous.file not in {f"{previous.md5hash}.{ext}" for ext in EXTENSIONS}:
        return False
    final = out / previous.file
    if _md5_of(final) == previous.md5:
        return True
    if _md5_of(_temp_path(final)) == previous.md5:
        _move_into_place(_temp_path(final), final)
        return True
    return False


def _prune(out: Path, ledger: Ledger) -> None:
    """Remove this stage's leftovers in `out`: temporary files and images of rows that no longer keep one."""
    kept = {row.file for row in ledger.rows() if row.status in KEPT}
    for md5hash in ledger.order:
        for ext in EXTENSIONS:
            path = out / f"{md5hash}.{ext}"
            if path.name not in kept:
                path.unlink(missing_ok=True)
            _temp_path(path).unlink(missing_ok=True)
    for path in out.glob(f".{LEDGER_NAME}.*.tmp"):  # m2m.io.atomic_path's temporary, left by a kill mid-write
        path.unlink()


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.part")


def _md5_of(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _run_parallel(tasks: list[Callable[[], None]], workers: int) -> None:
    """Run `tasks` on `workers` threads; on the first error cancel what has not started and re-raise."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="images", disable=None):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def coverage(rows: pd.DataFrame, ledger: pd.DataFrame, data: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(obtained, total) count tables per Fitzpatrick type x condition, in the layout of Table 1."""
    fst_order = (*data.light_fst, *data.dark_fst)
    kept = rows.md5hash.isin(ledger.md5hash[ledger.status.isin(KEPT)])
    return count_table(rows[kept], data.conditions, fst_order), count_table(rows, data.conditions, fst_order)


def shortfalls(obtained: pd.DataFrame, data: DataParams, n_seed_images: int) -> list[str]:
    """Cells that cannot support the splits, each as a readable line ([] if all can).

    The splits draw `n_seed_images` seed images per condition from each group (light, dark), and every condition x
    FST cell must keep at least one image, so a group needs one image beyond its seeds and a cell at least one.
    """
    lines = []
    for condition in data.conditions:
        for group, fsts in (("light", data.light_fst), ("dark", data.dark_fst)):
            n = int(obtained.loc[list(fsts), condition].sum())
            if n <= n_seed_images:
                lines.append(f"{condition}, {group} FST {'+'.join(map(str, fsts))}: {n} obtained, needs at least "
                             f"{n_seed_images + 1} ({n_seed_images} seed images and one more)")
            lines += [f"{condition}, FST {fst}: none obtained, needs at least one test image"
                      for fst in fsts if obtained.loc[fst, condition] == 0]
    return lines


def coverage_markdown(obtained: pd.DataFrame, total: pd.DataFrame, ledger: pd.DataFrame, source: str,
                      missing: list[str]) -> str:
    """The images report: obtained / total per cell beside Table 1, statuses, MD5 agreement and shortfalls."""
    cells = obtained.astype(str) + " / " + total.astype(str)
    table = table_markdown(cells, f"Images obtained per condition and Fitzpatrick type (source: {source})")
    statuses = ledger.status.value_counts()
    lines = [table, "## Ledger statuses", "", "| status | images |", "|---|---|",
             *(f"| {status} | {n} |" for status, n in statuses.items()), ""]
    match = ledger.md5_match[ledger.status.isin(KEPT)]
    if (match != "").any():
        lines += [f"MD5 of the kept files: {int((match == 'true').sum())} equal the CSV's md5hash, "
                  f"{int((match == 'false').sum())} differ.", ""]
    if missing:
        lines += ["## Shortfalls: the splits cannot be drawn", "", *(f"- {line}" for line in missing), ""]
    return "\n".join(lines)
