"""Commands of the evaluation stages: classify, aggregate, report; and table5 (a view over experiments, not a stage)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from m2m import io
from m2m.cli._app import app, stage
from m2m.errors import M2MError
from m2m.params import SOURCES, load_params

PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file (composed by DVC from conf/)")


@stage("classify", params=("classifier", "data"))
def classify(
    split: Path = typer.Option(..., help="split CSV of this seed (data/splits/seed=<n>.csv)"),
    images: Path = typer.Option(..., help="verified image folder"),
    synthetic: Path = typer.Option(..., help="synthetic set of this seed (read only for syn and real+syn)"),
    seed: int = typer.Option(..., help="repetition seed"),
    arch: str = typer.Option(..., help="vgg16, resnet18 or vit_b_16"),
    source: str = typer.Option(..., help="training source: real, syn or real+syn"),
    checkpoint: Path = typer.Option(..., help="model checkpoint to write (.pt)"),
    out: Path = typer.Option(..., help="run folder: metrics.json, predictions.csv, per_class.csv, confusion.csv"),
    train_log: Path = typer.Option(..., help="training curve CSV (epoch, losses, val accuracy, lr) for DVC plots"),
    params_file: Path = PARAMS,
) -> None:
    """Train one classifier on `source`, select it on val, and evaluate it once on the test and contrast rows."""
    import torch

    from m2m.classify import run_name
    from m2m.classify.run import classify_run
    from m2m.data.splits import read_split

    p = load_params(params_file, "classifier", "data")
    if source not in SOURCES:
        raise M2MError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    run = classify_run(read_split(split), images, synthetic, source, arch, seed, p.classifier, p.data.conditions)
    with io.atomic_path(checkpoint) as tmp:
        torch.save(run.checkpoint, tmp)
    with io.atomic_dir(out) as tmp:
        io.write_json(tmp / "metrics.json", run.metrics)
        run.predictions.to_csv(tmp / "predictions.csv", index=False)
        run.per_class.to_csv(tmp / "per_class.csv", index=False)
        run.confusion.to_csv(tmp / "confusion.csv", index=False)
    io.write_csv(train_log, run.log)
    typer.echo(f"{run_name(seed, arch, source)}: accuracy {run.metrics['accuracy']:.4f}, "
               f"macro-F1 {run.metrics['f1_macro']:.4f} (epoch {run.metrics['selected_epoch']}) -> {out}")


@stage("aggregate", params=("seeds", "classifier"))
def aggregate(
    runs: Path = typer.Option(..., help="folder of run folders <seed>-<arch>-<source>"),
    out: Path = typer.Option(..., help="aggregated metrics JSON (mean and sample std over seeds)"),
    params_file: Path = PARAMS,
) -> None:
    """Mean and sample std (ddof=1) over repetition seeds of every run metric, per architecture x source."""
    from m2m.evaluate import aggregate as aggregate_runs
    from m2m.report.runs import read_run_metrics

    p = load_params(params_file, "seeds", "classifier")
    metrics = aggregate_runs(read_run_metrics(runs, p.seeds, p.classifier.archs, SOURCES))
    io.write_json(out, metrics)
    typer.echo(f"aggregated {len(p.seeds)} seeds x {len(p.classifier.archs)} archs x {len(SOURCES)} sources "
               f"-> {out}")


@stage("report", params=("setting", "target_group", "seeds", "classifier", "images", "report", "data"))
def report(
    metrics: Path = typer.Option(..., help="aggregated metrics from stage `aggregate`"),
    runs: Path = typer.Option(..., help="folder of run folders (confusion matrices)"),
    splits: Path = typer.Option(..., help="folder of split CSVs (test and contrast sizes)"),
    images: Path = typer.Option(..., help="verified image folder (real halves of the pairs figure)"),
    synthetic: Path = typer.Option(..., help="folder of synthetic sets seed=<n>/"),
    published: Path = typer.Option(..., help="the paper's published tables (CSV)"),
    out: Path = typer.Option(..., help="report folder: tables.md and figures/"),
    params_file: Path = PARAMS,
) -> None:
    """Write the paper's Table 2/3/4 for the current setting beside the published one, and the figures."""
    from m2m.report.build import build_report

    p = load_params(params_file, "setting", "target_group", "seeds", "classifier", "images", "report", "data")
    aggregated = json.loads(metrics.read_text())
    with io.atomic_dir(out) as tmp:
        build_report(p, aggregated, runs, splits, images, synthetic, published, tmp)
    typer.echo(f"report -> {out}")


@app.command("table5")
def table5(
    exp_json: Path = typer.Option(None, "--exp-json", help="saved `dvc exp show --json` output (default: run it)"),
    published: Path = typer.Option(Path("data/published/paper_tables.csv"), help="the paper's published tables"),
    arch: str = typer.Option("vgg16", help="architecture of the syn-trained classifier (the paper used VGG-16)"),
    out: Path = typer.Option(None, help="markdown file to write (default: print)"),
) -> None:
    """Paper Table 5 (strategy x target accuracy of the syn-trained classifier) from the experiments that exist.

    Not a DVC stage: it reads every experiment's params and metrics as `dvc exp show --json` reports them, keeps
    those of setting i, and fills one cell per (generation.strategy, target_group) with the mean test accuracy of
    `<arch>.syn` (the most recent experiment wins when several share a cell). Cells without an experiment stay
    empty; the paper's published Table 5 is printed below for comparison. Queue the ablation with e.g.
    `dvc exp run --queue -S setting=i -S target_group=light -S generation.strategy=txt2img-ti`.
    """
    import subprocess

    from m2m.report.table5 import experiments_table, table5_markdown

    if exp_json is None:
        shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
        if shown.returncode:
            raise typer.BadParameter(f"`dvc exp show --json` failed: {shown.stderr.strip()}")
        exps = json.loads(shown.stdout)
    else:
        exps = json.loads(exp_json.read_text())
    text = table5_markdown(experiments_table(exps, arch), published, arch)
    if out is None:
        typer.echo(text)
    else:
        io.write_text(out, text)
