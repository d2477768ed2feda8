"""Commands of the data stages: subset, splits; and compose-params (conf/ -> params.yaml)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from m2m import io
from m2m.cli._app import app, stage
from m2m.params import load_params

PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file (composed by DVC from conf/)")


@stage("subset", params=("data",))
def subset(
    annotations: Path = typer.Option(..., help="Fitzpatrick17k annotation CSV"),
    out: Path = typer.Option(..., help="subset CSV to write"),
    table: Path = typer.Option(..., help="markdown Table 1 to write"),
    params_file: Path = PARAMS,
) -> None:
    """Select the study's conditions and Fitzpatrick types; write the subset and its Table 1."""
    from m2m.data.subset import count_table, read_annotations, select_subset, table_markdown

    p = load_params(params_file, "data").data
    rows = select_subset(read_annotations(annotations, p.sha256), p.conditions, p.light_fst, p.dark_fst)
    counts = count_table(rows, p.conditions, (*p.light_fst, *p.dark_fst))
    io.write_csv(out, rows)
    io.write_text(table, table_markdown(counts, f"Table 1: images per condition and Fitzpatrick type ({len(rows)})"))
    typer.echo(f"subset: {len(rows)} images ({counts.loc[list(p.light_fst), 'Total'].sum()} light, "
               f"{counts.loc[list(p.dark_fst), 'Total'].sum()} dark) -> {out}")


@stage("splits", params=("setting", "target_group", "seeds", "data", "splits"))
def splits(
    subset_csv: Path = typer.Option(..., "--subset", help="subset CSV from stage `subset`"),
    clusters: Path = typer.Option(..., help="near-duplicate clusters (data/raw/abhishek2024/complete_clusters.txt)"),
    out: Path = typer.Option(..., help="folder for seed=<n>.csv"),
    params_file: Path = PARAMS,
) -> None:
    """Write one split per repetition seed for the current setting."""
    from m2m.data.leakage import near_duplicates_of, read_clusters
    from m2m.data.splits import make_split

    p = load_params(params_file, "setting", "target_group", "seeds", "data", "splits")
    rows = pd.read_csv(subset_csv, dtype={"md5hash": str})
    cluster_of = read_clusters(clusters, rows.md5hash) if p.splits.exclude_near_duplicates else {}
    with io.atomic_dir(out) as tmp:
        for seed in p.seeds:
            split = make_split(rows, seed, p.setting, p.target_group, p.data.light_fst, p.data.dark_fst,
                               p.splits.n_seed_images, p.splits.val_fraction)
            if cluster_of:
                test = split.md5hash[split.role == "test"]
                leaked = near_duplicates_of(test, cluster_of)
                split = make_split(rows, seed, p.setting, p.target_group, p.data.light_fst, p.data.dark_fst,
                                   p.splits.n_seed_images, p.splits.val_fraction, frozenset(leaked))
            split.to_csv(tmp / f"seed={seed}.csv", index=False)
            counts = split.role.value_counts()
            roles = ", ".join(f"{role} {counts.get(role, 0)}" for role in ("train", "val", "test", "contrast"))
            typer.echo(f"seed={seed}: {roles}")


@app.command("compose-params")
def compose_params(
    conf: Path = typer.Option(Path("conf"), help="Hydra config folder"),
    out: Path = typer.Option(Path("params.yaml"), help="params file to write"),
    overrides: list[str] = typer.Argument(None, help="Hydra overrides, e.g. profile=paper setting=iii"),
) -> None:
    """Compose params.yaml from conf/ as `dvc exp run` does (use after editing conf/)."""
    from m2m.compose import compose

    io.write_text(out, compose(conf, overrides or []))
    typer.echo(f"wrote {out}")


@app.command("timings")
def timings(log: Path = typer.Argument(..., help="JSON-lines log written by stages when M2M_TIMINGS is set")) -> None:
    """Print the per-stage wall-time summary of a `make repro` run."""
    import json

    rows = pd.DataFrame([json.loads(line) for line in log.read_text().splitlines() if line.strip()])
    summary = rows.groupby("stage", sort=False).seconds.agg(["count", "sum"])
    for stage_name, (count, seconds) in summary.iterrows():
        typer.echo(f"{stage_name:<20} {int(count):>3} run(s) {seconds:>8.1f} s")
    typer.echo(f"{'total':<20} {len(rows):>3} run(s) {rows.seconds.sum():>8.1f} s")
