"""Configuration dataclasses for every part of SAIR, and a registry of named configurations.

A :class:`SAIRConfig` is saved inside every checkpoint and export manifest, so the checkpoint
alone is enough to rebuild its model (``SAIRConfig.from_dict(json.loads(...))``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

# CLIP's own normalisation constants (OpenAI CLIP); used by the semantic encoder.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Options beyond the paper: the classical fill of the holes (sair_deploy.model.fill) and how a
# residual AIR interpolates it (sair_deploy.model.liif.sample_base). Here, not there: no torch.
FILLS = ("zero", "pushpull", "onion", "biharmonic")
BASES = ("bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class SemanticConfig:
    """The CLIP ViT image tower, read densely the MaskCLIP way.

    ``width/layers/heads`` are those of the ViT; ``embed_dim`` is CLIP's joint embedding size
    (512 for ViT-B/16), the channel count of the dense grid E. ``max_side`` is the longest side of
    the (resized) image the encoder sees; it lives here so training and inference agree.
    ``pretrained`` names the open_clip weights the full model is built from (a tag or a file);
    ``None`` means random initialisation (tests, the bundled demo model).
    """

    width: int = 768
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    embed_dim: int = 512
    native_size: int = 224
    max_side: int = 224
    keep_residual: bool = True  # MaskCLIP keeps residual + FFN in the last block; ClearCLIP drops both
    clip_model: str = "ViT-B-16-quickgelu"
    pretrained: str | None = "openai"

    @property
    def native_grid(self) -> int:
        return self.native_size // self.patch_size


@dataclass(frozen=True)
class AppEncoderConfig:
    """AppEncoder of the paper's Tab. 4 with configurable widths.

    ``norm`` is the normalisation of the residual blocks: ``"batch"`` (a fixed affine map at
    inference, so tiles see the same function as the whole image), ``"instance"`` (the reference
    trunk's choice; per-tile statistics) or ``"none"``.
    """

    in_channels: int = 4
    widths: tuple[int, int, int] = (64, 128, 256)
    res_blocks: int = 8
    dilation: int = 2
    norm: Literal["batch", "instance", "none"] = "batch"

    @property
    def out_channels(self) -> int:
        return self.widths[0]

    def receptive_radius(self) -> int:
        """Half-width, in input pixels, of the encoder's receptive field (for tile overlap)."""
        r, jump = 3, 1  # conv7x7
        for _ in range(2):  # two stride-2 convs, kernel 4
            r += 2 * jump
            jump *= 2
        r += self.res_blocks * (self.dilation + 1) * jump  # a dilated and a plain 3x3 per block
        r += 2 * jump  # two plain 3x3 convs
        for _ in range(2):  # two transposed convs, kernel 4 stride 2
            jump //= 2
            r += 2 * jump
        return r


@dataclass(frozen=True)
class MLPConfig:
    """A ``depth``-layer ReLU MLP (``depth`` Linear layers) with ``hidden`` units."""

    hidden: int = 256
    depth: int = 4


@dataclass(frozen=True)
class SAIRConfig:
    """The whole model. ``use_semantic=False`` is the LIIF ablation (no SIR, no CLIP)."""

    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    app: AppEncoderConfig = field(default_factory=AppEncoderConfig)
    sir: MLPConfig = field(default_factory=MLPConfig)
    air: MLPConfig = field(default_factory=MLPConfig)
    use_semantic: bool = True
    sir_unfold: bool = True  # SIR reads the 3x3 neighbourhood of each latent cell (as LIIF does)
    # Not in the paper (options for small models; the paper's configuration keeps the defaults):
    fill: Literal["zero", "pushpull", "onion", "biharmonic"] = "zero"  # what the AppEncoder sees in holes
    residual: bool = False  # AIR predicts a residual over the fill (needs a fill other than zero)
    base: Literal["bilinear", "bicubic", "lanczos"] = "bilinear"  # how that fill is resampled at a query
    name: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SAIRConfig":
        """Rebuild a config saved with :meth:`to_dict`; ``ValueError`` naming what is wrong for
        anything else (unknown keys, as a newer release's config would have, or bad values)."""
        if not isinstance(d, dict):
            raise ValueError(f"the model config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        parts = {}
        for key, sub in (("semantic", SemanticConfig), ("app", AppEncoderConfig), ("sir", MLPConfig),
                         ("air", MLPConfig)):
            parts[key] = _section(sub, key, d.pop(key, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SAIR config fields: {sorted(unknown)} (made by a newer "
                             f"release?)")
        for key in ("use_semantic", "sir_unfold", "residual"):
            if key in d and not isinstance(d[key], bool):
                raise ValueError(f"config field {key} must be true or false, got {d[key]!r}")
        if "name" in d and not isinstance(d["name"], str):
            raise ValueError(f"config field name must be a string, got {d['name']!r}")
        return cls(**parts, **d)

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(map(repr, FILLS))}, got {self.fill!r}")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {', '.join(map(repr, BASES))}, got {self.base!r}")
        if self.residual and self.fill == "zero":
            raise ValueError("residual=True predicts a residual over the fill: it needs fill='pushpull', "
                             "'onion' or 'biharmonic'")

    def replace(self, **changes: Any) -> "SAIRConfig":
        return dataclasses.replace(self, **changes)


def _section(cls, key: str, value: Any) -> Any:
    """One nested config section from its dict, checking keys and the types of numbers."""
    if not isinstance(value, dict):
        raise ValueError(f"config section {key} must be a JSON object, got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(value) - set(fields)
    if unknown:
        raise ValueError(f"unknown fields in config section {key}: {sorted(unknown)} (made by a "
                         f"newer release?)")
    value = dict(value)
    if "widths" in value:
        w = value["widths"]
        if not (isinstance(w, (list, tuple)) and len(w) == 3 and all(_pos_int(x) for x in w)):
            raise ValueError(f"config {key}.widths must be 3 positive integers, got {w!r}")
        value["widths"] = tuple(w)
    for name, v in value.items():
        default = getattr(cls(), name)
        if isinstance(default, bool) and not isinstance(v, bool):
            raise ValueError(f"config {key}.{name} must be true or false, got {v!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not _pos_int(v):
            raise ValueError(f"config {key}.{name} must be a positive integer, got {v!r}")
    try:
        return cls(**value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad config section {key}: {exc}") from None


def _pos_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _paper() -> SAIRConfig:
    # The semantic encoder sees the 256x256 training image itself (a 16x16 grid, positional
    # embeddings interpolated), not a 224 downsample: the paper gives no reason to shrink it, and
    # a 14x14 grid would put SIR's cells off the 16-pixel patches the image was cut into.
    return SAIRConfig(semantic=SemanticConfig(max_side=256), name="sair-b16")


def _small() -> SAIRConfig:
    # The bundled demo model: a small ViT trained from scratch (no pretrained CLIP here), with
    # the push-pull fill and a residual AIR (options beyond the paper).
    return SAIRConfig(
        semantic=SemanticConfig(width=128, layers=4, heads=4, embed_dim=64, max_side=224,
                                pretrained=None),
        app=AppEncoderConfig(widths=(32, 64, 128), res_blocks=4),
        sir=MLPConfig(hidden=128, depth=4),
        air=MLPConfig(hidden=128, depth=4),
        fill="pushpull",  # a small CPU-trained model needs the classical fill to start from
        residual=True,
        name="sair-small",
    )


def _tiny() -> SAIRConfig:
    # For tests: every code path of the full model at a size that runs in milliseconds.
    return SAIRConfig(
        semantic=SemanticConfig(width=32, layers=2, heads=2, embed_dim=16, max_side=64,
                                pretrained=None),
        app=AppEncoderConfig(widths=(8, 16, 32), res_blocks=1),
        sir=MLPConfig(hidden=32, depth=4),
        air=MLPConfig(hidden=32, depth=4),
        name="sair-tiny",
    )


CONFIGS = {"sair-b16": _paper, "sair-small": _small, "sair-tiny": _tiny}


def get_config(name: str) -> SAIRConfig:
    """Return the registered configuration ``name`` (``sair-b16``, ``sair-small``, ``sair-tiny``)."""
    try:
        return CONFIGS[name]()
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}") from None


# ---- training recipes ------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingRecipe:
    """Training defaults that belong together: what ``sair-train`` uses for every option the
    command line leaves out. Each config names its recipe (:data:`CONFIG_RECIPES`); ``--recipe``
    picks another, and any single option still overrides its recipe value.

    ``crop`` is ``"whole"`` (the whole image resized to ``size x size``, as the paper's datasets are
    prepared) or ``"zoom"`` (a random window at a random zoom: more samples from few photos).
    ``scale_max``/``scale_prob`` draw super-resolution samples, ``hole_fraction`` is the share of
    the query points forced inside the hole (0: uniformly sampled pixels).
    """

    name: str
    size: int = 256
    crop: Literal["whole", "zoom"] = "whole"
    queries: int = 2304
    scale_max: float = 1.0
    scale_prob: float = 0.0
    hole_fraction: float = 0.0
    batch: int = 16
    epochs: int = 200
    lr: float = 1e-4
    lr_step: int = 100
    lr_gamma: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES: dict[str, TrainingRecipe] = {
    # The paper: inpainting at the training resolution (256^2), L1 on uniformly sampled pixels of
    # whole images, Adam(0.9, 0.999) at 1e-4 halved every 100 epochs, 200 epochs, batch 16.
    "paper": TrainingRecipe("paper"),
    # The same recipe at 128^2, for the small configs on a CPU.
    "small": TrainingRecipe("small", size=128),
    # Extras beyond the paper (the bundled demo's): random-zoom crops, half the samples at output
    # scales 1-4 (LIIF-style super-resolution), half the queries inside the hole.
    "liif-sr": TrainingRecipe("liif-sr", size=128, crop="zoom", scale_max=4.0, scale_prob=0.5,
                              hole_fraction=0.5),
}

CONFIG_RECIPES = {"sair-b16": "paper", "sair-small": "small", "sair-tiny": "small"}


def get_recipe(name: str) -> TrainingRecipe:
    """The named training recipe (``paper``, ``small``, ``liif-sr``)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown training recipe {name!r}; known: {', '.join(RECIPES)}") from None


def recipe_for(config_name: str) -> TrainingRecipe:
    """The recipe a config trains with by default (``paper`` for configs without their own)."""
    return get_recipe(CONFIG_RECIPES.get(config_name, "paper"))
