"""Commands of the real-data stages: images (obtain and verify the subset's images) and leakage (near-duplicates)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from m2m import io
from m2m.cli._app import stage
from m2m.cli.data import PARAMS
from m2m.errors import M2MError
from m2m.params import ImagesParams, load_params


def images_params(params_file: Path, overrides: dict) -> ImagesParams:
    """The `images` section of `params_file` (built-in defaults if there is no such file), with `overrides` applied."""
    base = load_params(params_file, "images").images if params_file.exists() else ImagesParams()
    return dataclasses.replace(base, **{name: value for name, value in overrides.items() if value is not None})


@stage("images", params=("images", "data", "splits"))
def images(
    csv: Path = typer.Option(..., help="CSV with md5hash, plus url (download) or label + fitzpatrick_scale (mini)"),
    out: Path = typer.Option(..., help="image folder to fill with <md5hash>.<ext>; its ledger.csv lands there"),
    report: Path = typer.Option(None, help="coverage report to write (needs label, fitzpatrick_scale, params)"),
    params_file: Path = PARAMS,
    source: str = typer.Option(None, help="mini, download or folder (param images.source)"),
    folder: str = typer.Option(None, help="local folder of <md5hash>.jpg for source folder (param images.folder)"),
    render_size: int = typer.Option(None, help="mini-world image size in px (param images.render_size)"),
    concurrency: int = typer.Option(None, help="parallel downloads (param images.concurrency)"),
    timeout_s: float = typer.Option(None, help="connect and read timeout, seconds (param images.timeout_s)"),
    retries: int = typer.Option(None, help="retries on 429/5xx/resets/timeouts (param images.retries)"),
    backoff_s: float = typer.Option(None, help="first retry delay, doubled each retry (param images.backoff_s)"),
    max_redirects: int = typer.Option(None, help="redirects followed at most (param images.max_redirects)"),
    user_agent: str = typer.Option(None, help="User-Agent header (param images.user_agent)"),
    strict_md5: bool = typer.Option(None, "--strict-md5/--no-strict-md5",
                                    help="reject files whose MD5 differs from md5hash (param images.strict_md5)"),
) -> None:
    """Obtain one verified image per CSV row (mini world, download or local folder); ledger; coverage report.

    Options left out take the `images` section of the params file, or built-in defaults when there is none.
    """
    from m2m.data.images import REQUIRED_COLUMNS, coverage, coverage_markdown, obtain_images, read_image_csv, shortfalls

    p = images_params(params_file, dict(source=source, folder=folder, render_size=render_size, concurrency=concurrency,
                                        timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                                        max_redirects=max_redirects, user_agent=user_agent, strict_md5=strict_md5))
    need = (*REQUIRED_COLUMNS[p.source], *(("label", "fitzpatrick_scale") if report else ()))
    rows = read_image_csv(csv, dict.fromkeys(need))
    ledger = obtain_images(rows, out, p)
    counts = ledger.status.value_counts()
    typer.echo(f"images: {int(ledger.file.ne('').sum())}/{len(rows)} kept (" +
               ", ".join(f"{status} {n}" for status, n in counts.items()) + f") -> {out}")
    if report is None:
        return
    sp = load_params(params_file, "data", "splits")
    obtained, total = coverage(rows, ledger, sp.data)
    missing = shortfalls(obtained, sp.data, sp.splits.n_seed_images)
    io.write_text(report, coverage_markdown(obtained, total, ledger, p.source, missing))
    if missing:
        raise M2MError(f"too few images for the splits in {len(missing)} cell(s) (see {report}): " + "; ".join(missing))


@stage("leakage", params=("seeds",))
def leakage(
    splits: Path = typer.Option(..., help="folder of seed=<n>.csv from stage `splits`"),
    clusters: Path = typer.Option(..., help="near-duplicate clusters (data/raw/abhishek2024/complete_clusters.txt)"),
    out: Path = typer.Option(..., help="metrics JSON to write"),
    report: Path = typer.Option(..., help="markdown report to write"),
    params_file: Path = PARAMS,
) -> None:
    """Per repetition seed: how many test images have a near-duplicate among the training images, and which."""
    import pandas as pd

    from m2m.data.leakage import leakage_markdown, leakage_summary, leaked_pairs, read_clusters

    summaries, pairs = {}, {}
    for seed in load_params(params_file, "seeds").seeds:
        split = pd.read_csv(splits / f"seed={seed}.csv", dtype={"md5hash": str})
        pairs[seed] = leaked_pairs(split, read_clusters(clusters, split.md5hash))
        summaries[seed] = leakage_summary(split, pairs[seed])
        typer.echo(f"seed={seed}: {summaries[seed]['leaked']} of {summaries[seed]['test_images']} test images leaked")
    io.write_json(out, {f"seed={seed}": summary for seed, summary in summaries.items()})
    io.write_text(report, leakage_markdown(summaries, pairs))
