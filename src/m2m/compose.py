"""Compose params.yaml from conf/ with Hydra, the way `dvc exp run -S ...` does when hydra is enabled."""

from __future__ import annotations

from pathlib import Path

import yaml


def compose(conf_dir: Path | str, overrides: list[str]) -> str:
    """The params.yaml text for `overrides` (e.g. ["profile=paper", "setting=iii"])."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    raw = OmegaConf.to_container(cfg, resolve=True)
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120)
