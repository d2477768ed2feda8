#!/usr/bin/env bash
# The pretraining stages in order, as pretrain/dvc.yaml runs them (use this where DVC's repo lock is in the way).
set -euo pipefail
cd "$(dirname "$0")"
m2m pretrain-corpus --out out/corpus --params params.yaml
m2m pretrain-vae --corpus out/corpus --out out/vae --params params.yaml
m2m pretrain-unet --corpus out/corpus --vae out/vae --out out/mini-sd --metrics out/train.json --params params.yaml
m2m probe-base --model out/mini-sd --corpus out/corpus --out-json out/probe.json --out-md probe.md --params params.yaml
