"""What the generator stages hand each other, and which of them a `generation.strategy` needs.

- `models/ti/seed=<n>/`: one `<token without brackets>.safetensors` per condition (key: the token, value: its
  (1, D) embedding; the format of diffusers' textual_inversion.py, read by stock
  `pipe.load_textual_inversion(paths, token=tokens)`) and `tokens.json` (condition -> token).
- `models/lora/seed=<n>/pytorch_lora_weights.safetensors`, read by stock `pipe.load_lora_weights(dir)`.
- A stage whose artifact the strategy does not use writes only `skipped.json` (seconds, not hours).
"""

from __future__ import annotations

import json
from pathlib import Path

from m2m import io
from m2m.errors import M2MError

SKIPPED = "skipped.json"
TOKENS = "tokens.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def uses_ti(strategy: str) -> bool:
    return strategy in ("txt2img-ti", "img2img-ti", "img2img-ti+lora")


def uses_lora(strategy: str) -> bool:
    return strategy in ("img2img-lora", "img2img-ti+lora")


def uses_img2img(strategy: str) -> bool:
    return strategy.startswith("img2img")


def embedding_file(token: str) -> str:
    """File name of a token's embedding: "<basal-cell-carcinoma>" -> "basal-cell-carcinoma.safetensors"."""
    return f"{token.strip('<>')}.safetensors"


def write_skipped(out_dir: Path, stage: str, strategy: str) -> None:
    """The no-op artifact of a stage that `strategy` does not need (deterministic content)."""
    with io.atomic_dir(out_dir) as tmp:
        io.write_json(tmp / SKIPPED, {"stage": stage, "strategy": strategy, "reason": f"{strategy} does not use it"})


def _require(folder: Path, name: str, stage: str) -> Path:
    if (folder / SKIPPED).is_file():
        raise M2MError(f"{folder} was skipped by its strategy ({folder / SKIPPED}); re-run stage `{stage}` "
                       "with the current generation.strategy")
    path = folder / name
    if not path.is_file():
        raise M2MError(f"{folder}: {name} not found; run stage `{stage}` first")
    return path


def read_tokens(ti_dir: Path | str) -> dict[str, str]:
    """condition -> placeholder token, from a Textual Inversion output folder."""
    return json.loads(_require(Path(ti_dir), TOKENS, "textual_inversion").read_text())


def load_ti(pipe, ti_dir: Path | str, conditions) -> dict[str, str]:
    """Add the learned tokens of `conditions` to `pipe`'s tokenizer and text encoder; return condition -> token."""
    ti_dir = Path(ti_dir)
    tokens = read_tokens(ti_dir)
    missing = [c for c in conditions if c not in tokens]
    if missing:
        raise M2MError(f"{ti_dir / TOKENS}: no token for condition(s) {', '.join(missing)}")
    tokens = {c: tokens[c] for c in conditions}
    paths = [str(_require(ti_dir, embedding_file(t), "textual_inversion")) for t in tokens.values()]
    pipe.load_textual_inversion(paths, token=list(tokens.values()))
    return tokens


def load_lora(pipe, lora_dir: Path | str) -> None:
    """Load the UNet LoRA of stage `lora` into `pipe` (stock diffusers loader)."""
    lora_dir = Path(lora_dir)
    _require(lora_dir, LORA_WEIGHTS, "lora")
    pipe.load_lora_weights(str(lora_dir))
