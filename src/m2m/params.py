"""Typed, validated parameters.

`params.yaml` (composed by DVC's Hydra support from `conf/`) is loaded into frozen dataclasses that reject unknown
keys and wrong types, so a typo in `-S generation.strenght=0.7` fails loudly instead of being ignored.

A stage command asks for the sections it reads (`load_params(path, "data", "splits")`); asking for a section the
stage did not declare in dvc.yaml is caught by `tests/test_dvc_yaml.py`, and reading an undeclared section at run
time raises, so a stage can never depend on a param that DVC does not track for it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from m2m.errors import M2MError

SETTINGS = ("i", "ii", "iii")
STRATEGIES = (
    "txt2img-vanilla",
    "txt2img-ti",
    "img2img-vanilla",
    "img2img-ti",
    "img2img-lora",
    "img2img-ti+lora",
)
ARCHITECTURES = ("vgg16", "resnet18", "vit_b_16")
SOURCES = ("real", "syn", "real+syn")


class ParamsError(M2MError):
    """A parameter file or value is invalid; the message names the parameter."""


def check_device(value: str, key: str) -> None:
    """A device param is auto, cpu, cuda, cuda:<n> or mps (m2m.devices.resolve_device turns it into a device)."""
    if value.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
        raise ParamsError(f"{key} must be auto, cpu, cuda, cuda:<n> or mps, got {value!r}")


@dataclass(frozen=True)
class DataParams:
    """Which rows of Fitzpatrick17k form the study subset."""

    sha256: str
    conditions: tuple[str, ...]
    light_fst: tuple[int, ...]
    dark_fst: tuple[int, ...]

    def __post_init__(self):
        if not self.conditions:
            raise ParamsError("data.conditions is empty")
        if set(self.light_fst) & set(self.dark_fst):
            raise ParamsError(f"data.light_fst {self.light_fst} and data.dark_fst {self.dark_fst} overlap")
        for fst in (*self.light_fst, *self.dark_fst):
            if fst not in range(1, 7):
                raise ParamsError(f"Fitzpatrick type {fst} in data.light_fst/dark_fst is not in 1..6")


@dataclass(frozen=True)
class SplitsParams:
    """Seed-group sampling and the classifier's validation hold-out."""

    n_seed_images: int
    val_fraction: float
    exclude_near_duplicates: bool

    def __post_init__(self):
        if self.n_seed_images < 1:
            raise ParamsError(f"splits.n_seed_images must be >= 1, got {self.n_seed_images}")
        if not 0 <= self.val_fraction < 1:
            raise ParamsError(f"splits.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class ImagesParams:
    """Where the images come from: the procedural mini world, a download, or a local folder.

    The defaults serve `m2m images` run standalone without a params file; params.yaml must still give every key.
    """

    source: str = "download"
    folder: str = ""
    render_size: int = 64
    concurrency: int = 8
    timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 1.0
    max_redirects: int = 5
    user_agent: str = "m2m-research-fetch/0.1 (+Fitzpatrick17k subset; academic use)"
    strict_md5: bool = False

    def __post_init__(self):
        if self.source not in ("mini", "download", "folder"):
            raise ParamsError(f"images.source must be mini, download or folder, got {self.source!r}")
        if self.source == "folder" and not self.folder:
            raise ParamsError("images.source is 'folder' but images.folder is empty")
        for name in ("render_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ParamsError(f"images.{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ParamsError(f"images.timeout_s must be > 0, got {self.timeout_s}")
        for name in ("retries", "backoff_s", "max_redirects"):
            if getattr(self, name) < 0:
                raise ParamsError(f"images.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class DiffusionParams:
    """The base model and how it runs. `threads`: torch CPU threads (0 = torch's default)."""

    base_model: str
    resolution: int
    device: str
    dtype: str
    threads: int
    skin_phrases: dict[int, str]

    def __post_init__(self):
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ParamsError(f"diffusion.dtype must be auto, float32, float16 or bfloat16, got {self.dtype!r}")
        check_device(self.device, "diffusion.device")
        if self.resolution % 8:
            raise ParamsError(f"diffusion.resolution must be a multiple of 8, got {self.resolution}")
        if self.threads < 0:
            raise ParamsError(f"diffusion.threads must be >= 0 (0 = torch's default), got {self.threads}")
        for fst in self.skin_phrases:
            if fst not in range(1, 7):
                raise ParamsError(f"diffusion.skin_phrases: Fitzpatrick type {fst} is not in 1..6")


def _require_fields(where: str, template: str, *fields: str) -> None:
    """Raise unless the prompt `template` (param `where`) has every `{field}`."""
    missing = [f for f in fields if "{" + f + "}" not in template]
    if missing:
        raise ParamsError(f"{where} {template!r} lacks {', '.join('{' + f + '}' for f in missing)}")


def _require_positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ParamsError(f"{section}.{name} must be > 0, got {value}")


@dataclass(frozen=True)
class TextualInversionParams:
    """One learned token per condition. `steps` are optimizer steps per token (`per_token`) or in all (joint)."""

    initializer_token: str
    templates: tuple[str, ...]
    steps: int
    batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    scale_lr: bool
    per_token: bool
    flip: bool

    def __post_init__(self):
        if not self.templates:
            raise ParamsError("textual_inversion.templates is empty")
        for template in self.templates:
            _require_fields("textual_inversion.templates", template, "token")
        _require_positive("textual_inversion", steps=self.steps, batch_size=self.batch_size,
                          gradient_accumulation_steps=self.gradient_accumulation_steps,
                          learning_rate=self.learning_rate)


@dataclass(frozen=True)
class LoraParams:
    """LoRA on the UNet attention. `caption`'s {token} is the TI token, or the condition name without TI."""

    rank: int
    alpha: int
    caption: str
    steps: int
    batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    max_grad_norm: float
    flip: bool

    def __post_init__(self):
        _require_fields("lora.caption", self.caption, "token", "skin")
        _require_positive("lora", rank=self.rank, alpha=self.alpha, steps=self.steps, batch_size=self.batch_size,
                          gradient_accumulation_steps=self.gradient_accumulation_steps,
                          learning_rate=self.learning_rate, max_grad_norm=self.max_grad_norm)


@dataclass(frozen=True)
class GenerationParams:
    """Synthetic images. `prompt` (with {token}) serves the strategies with TI, `vanilla_prompt` (with {condition})
    the others; `batch_size` is images per pipeline call; `strength` is unused by txt2img strategies."""

    strategy: str
    n_per_image: int
    strength: float
    guidance_scale: float
    num_inference_steps: int
    batch_size: int
    output_size: int
    prompt: str
    vanilla_prompt: str

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ParamsError(f"generation.strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not 0 < self.strength <= 1:
            raise ParamsError(f"generation.strength must be in (0, 1], got {self.strength}")
        _require_fields("generation.prompt", self.prompt, "token", "skin")
        _require_fields("generation.vanilla_prompt", self.vanilla_prompt, "condition", "skin")
        _require_positive("generation", n_per_image=self.n_per_image, num_inference_steps=self.num_inference_steps,
                          batch_size=self.batch_size, output_size=self.output_size)


@dataclass(frozen=True)
class ClassifierParams:
    archs: tuple[str, ...]
    pretrained: bool
    freeze_backbone: bool
    epochs: int
    batch_size: int
    learning_rate: float
    lr_gamma: float
    image_size: int
    crop_size: int
    model_selection: str
    num_workers: int
    device: str

    def __post_init__(self):
        for arch in self.archs:
            if arch not in ARCHITECTURES:
                raise ParamsError(f"classifier.archs: {arch!r} is not one of {', '.join(ARCHITECTURES)}")
        if self.model_selection not in ("last", "val"):
            raise ParamsError(f"classifier.model_selection must be last or val, got {self.model_selection!r}")
        if self.crop_size > self.image_size:
            raise ParamsError(f"classifier.crop_size {self.crop_size} exceeds classifier.image_size {self.image_size}")
        check_device(self.device, "classifier.device")
        if self.freeze_backbone and not self.pretrained:
            raise ParamsError("classifier.freeze_backbone is true but classifier.pretrained is false: "
                              "a frozen random backbone learns nothing; set one of them")


@dataclass(frozen=True)
class ReportParams:
    pairs_per_condition: int


@dataclass(frozen=True)
class Params:
    """All of params.yaml. `profile` names the conf/profile/*.yaml it was composed from."""

    profile: str
    setting: str
    target_group: str
    seeds: tuple[int, ...]
    data: DataParams
    splits: SplitsParams
    images: ImagesParams
    diffusion: DiffusionParams
    textual_inversion: TextualInversionParams
    lora: LoraParams
    generation: GenerationParams
    classifier: ClassifierParams
    report: ReportParams

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ParamsError(f"setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")
        if self.target_group not in ("dark", "light"):
            raise ParamsError(f"target_group must be dark or light, got {self.target_group!r}")
        if self.setting != "i" and self.target_group != "dark":
            raise ParamsError(f"target_group={self.target_group} is only defined for setting i "
                              f"(settings ii and iii always target the dark group)")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ParamsError(f"seeds must be a non-empty list of distinct integers, got {list(self.seeds)}")


@dataclass(frozen=True)
class StageParams:
    """The sections of `Params` that one stage declared; reading any other section raises."""

    params: Params
    sections: tuple[str, ...] = field(default=())

    def __getattr__(self, name: str):
        # A dotted declaration such as "generation.strategy" opens its section (DVC tracks only that key).
        if name not in self.sections and not any(s.startswith(f"{name}.") for s in self.sections):
            raise ParamsError(f"param section {name!r} is not declared by this stage (declared: {self.sections})")
        return getattr(self.params, name)


def _convert(value, annotation, where: str):
    """Convert a YAML value to `annotation`, raising ParamsError that names `where`."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where} must be a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(annotation)
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where} must be a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation)
        return {_convert(k, key_type, f"{where} key"): _convert(v, value_type, f"{where}.{k}")
                for k, v in value.items()}
    if origin is types.UnionType:
        raise ParamsError(f"{where}: union types are not supported in params")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ParamsError(f"{where} must be {annotation.__name__}, got {value!r}")
    return value


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name in hints]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(f"unknown param {', '.join(f'{where}.{k}'.lstrip('.') for k in unknown)}")
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(f"missing param {', '.join(f'{where}.{k}'.lstrip('.') for k in missing)}")
    values = {n: _convert(raw[n], hints[n], f"{where}.{n}".lstrip(".")) for n in names}
    return cls(**values)


def parse_params(raw: dict) -> Params:
    """Validate a params mapping (as read from params.yaml) into `Params`."""
    return _build(Params, raw, "")


def read_params_file(path: Path | str) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found") from None
    try:
        return parse_params(raw)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None


def load_params(path: Path | str, *sections: str) -> StageParams:
    """Load params.yaml and expose only `sections` (the ones the stage declares in dvc.yaml)."""
    return StageParams(read_params_file(path), tuple(sections))
