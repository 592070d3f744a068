"""The config sections: typed dataclasses holding every default, each checking its own values when built.

`Config` gathers them; fashiongen.config.loading fills one from YAML files and `key.sub=value` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .checks import ConfigError, check_choice, check_range


@dataclass
class DataConfig:
    """Where images and captions come from and how they are prepared for a model."""

    source: str = "../shared/data/fashion-products"  # a path; the format is detected unless `format` is set
    format: str = "auto"  # auto | fashiongen-h5 | folder | deepfashion-mm | deepfashion2 | fashion-mnist
    split: str = "train"  # train | validation | all
    val_fraction: float = 0.05  # for sources without their own split: share of ids held out, by hash
    resolution: int = 64
    resize_mode: str = "center-crop"  # center-crop | pad
    pad_value: int = 255  # studio photos have white backgrounds
    hflip: bool = True
    caption_mode: str = "both"  # raw | attributes | both
    caption_template: str = ""  # empty: the source's own template
    caption_field: str = ""  # empty: the source's default caption field/column
    skip_bad_records: bool = True  # skip, count and report defective records instead of failing
    poses: list[str] = field(default_factory=list)  # FashionGen h5: keep only these poses (empty: all)
    one_pose_per_product: bool = False  # FashionGen h5: keep the first kept pose of each product
    text_encoding: str = "auto"  # FashionGen h5 text bytes: auto (utf-8, then cp1252, then latin-1) or a codec

    def __post_init__(self) -> None:
        check_choice("data.split", self.split, ("train", "validation", "all"))
        check_choice("data.resize_mode", self.resize_mode, ("center-crop", "pad"))
        check_choice("data.caption_mode", self.caption_mode, ("raw", "attributes", "both"))
        check_range("data.resolution", self.resolution, 8, 4096)
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.99)
        check_range("data.pad_value", self.pad_value, 0, 255)


@dataclass
class TextConfig:
    """The caption encoder whose token states condition the generator."""

    encoder: str = "minilm"  # 'minilm' (bundled all-MiniLM-L6-v2) or a local Hugging Face model directory
    max_length: int = 64  # tokens, including special tokens; longer captions are truncated with a warning
    batch_size: int = 64
    device: str = "cpu"
    dtype: str = "float32"  # float32 | float16 | bfloat16 for the encoder's forward pass
    normalize_pooled: bool = True  # L2-normalise the pooled sentence embedding
    cache_dir: str = ".cache/fashiongen/text"  # empty string disables the embedding cache

    def __post_init__(self) -> None:
        check_range("text.max_length", self.max_length, 2, 4096)
        check_range("text.batch_size", self.batch_size, 1, 1 << 16)
        check_choice("text.dtype", self.dtype, ("float32", "float16", "bfloat16"))


@dataclass
class ModelConfig:
    """The generator: an architecture from the registry and the diffusion process it is trained for."""

    family: str = "diffusion"  # diffusion | gan | upsampler | student: which generator family `name` is a network of
    name: str = "unet-small"  # a key of fashiongen.models.MODELS (diffusion), fashiongen.gan.GANS (gan) or UPSAMPLERS
    prediction_type: str = "v_prediction"  # epsilon | v_prediction
    beta_schedule: str = "squaredcos_cap_v2"  # squaredcos_cap_v2 (cosine) | linear | scaled_linear
    num_train_timesteps: int = 1000
    zero_terminal_snr: bool = False  # rescale betas so the last step is pure noise (needs v_prediction)
    attributes: list[str] = field(default_factory=list)  # attribute names to condition on, e.g. [category, gender, colour, season]
    pooled_text: bool = True  # add a projection of the pooled caption embedding to the time embedding
    low_res_resolution: int = 0  # super-resolution stage: size of the low-res input image (0: a base model)
    low_res_noise_max: float = 0.1  # super-resolution: noise std (in [-1, 1] pixels) added to the low-res input, up to

    def __post_init__(self) -> None:
        check_choice("model.family", self.family, ("diffusion", "gan", "upsampler", "student"))
        check_choice("model.prediction_type", self.prediction_type, ("epsilon", "v_prediction"))
        check_choice("model.beta_schedule", self.beta_schedule, ("squaredcos_cap_v2", "linear", "scaled_linear"))
        check_range("model.num_train_timesteps", self.num_train_timesteps, 2, 100_000)
        check_range("model.low_res_resolution", self.low_res_resolution, 0, 4096)
        check_range("model.low_res_noise_max", self.low_res_noise_max, 0.0, 2.0)
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ConfigError("model.zero_terminal_snr: a zero-SNR last step needs model.prediction_type=v_prediction "
                              "(epsilon cannot recover the image from pure noise)")


@dataclass
class TrainConfig:
    """How a generator is trained: optimisation, precision, speed options, logging and checkpoints."""

    max_steps: int = 20_000  # optimizer steps
    batch_size: int = 32  # per process, per micro-step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4  # peak, after warmup
    lr_schedule: str = "cosine"  # cosine | constant (both after a linear warmup)
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1  # cosine ends at learning_rate * min_lr_ratio
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # 0 disables clipping
    snr_gamma: float = 5.0  # min-SNR-gamma loss weighting; 0 gives plain MSE
    caption_dropout_prob: float = 0.1  # empty caption (and no attributes): trains the unconditional branch for guidance
    attribute_dropout_prob: float = 0.1  # each attribute independently replaced by 'none'
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, and on a bf16 CPU: see train.device) | no | fp16 | bf16
    ema_decay: float = 0.9999  # the most the EMA decay grows to
    ema_power: float = 0.75  # decay warmup: 1 - (1 + step) ** -ema_power, capped at ema_decay
    channels_last: bool = True  # on CUDA only: on CPU channels_last is slower
    fused_adam: bool = True  # fused AdamW kernel where the device has one (CUDA)
    compile: bool = False  # torch.compile the UNet (caption states padded to a few fixed lengths: train/loader.py)
    gradient_checkpointing: bool = False
    num_workers: int = 2  # DataLoader worker processes per training process
    log_every: int = 10  # steps between metrics.jsonl lines
    checkpoint_every: int = 1000  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3  # the newest K checkpoints are kept
    validate_every: int = 1000  # steps between validation loss + sample grid (0: only at the end)
    validation_prompts: list[str] = field(default_factory=lambda: [
        "red floral summer dress", "black leather ankle boots", "men's navy check shirt", "white sneakers",
        "blue denim jeans", "grey wool sweater", "women's black handbag", "yellow sports t-shirt",
    ])
    validation_seeds: list[int] = field(default_factory=lambda: [0, 1])  # one image per (prompt, seed)
    validation_sampler: str = "ddim"  # a sampler of the model's family (fashiongen.diffusion.SAMPLERS; checked by train)
    validation_inference_steps: int = 20
    validation_guidance: float = 3.0
    validation_batches: int = 4  # held-out batches for the validation loss (fixed noise and timesteps)
    tensorboard: bool = False  # also log to TensorBoard (needs `pip install tensorboard`)
    output_dir: str = "runs"  # runs are numbered directories in here: runs/NNN-NAME/
    init_from: str = ""  # a model (export, pipeline folder, checkpoint or run) whose weights start a new run

    def __post_init__(self) -> None:
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every", "checkpoint_every",
                    "keep_checkpoints", "validation_inference_steps"):
            check_range(f"train.{key}", getattr(self, key), 1, 1 << 40)
        for key in ("warmup_steps", "num_workers", "validate_every", "validation_batches"):
            check_range(f"train.{key}", getattr(self, key), 0, 1 << 40)
        check_range("train.learning_rate", self.learning_rate, 0.0, 1e12)
        check_range("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("train.caption_dropout_prob", self.caption_dropout_prob, 0.0, 1.0)
        check_range("train.attribute_dropout_prob", self.attribute_dropout_prob, 0.0, 1.0)
        check_range("train.ema_decay", self.ema_decay, 0.0, 1.0)
        check_range("train.snr_gamma", self.snr_gamma, 0.0, 1e6)
        check_range("train.max_grad_norm", self.max_grad_norm, 0.0, 1e12)
        check_range("train.validation_guidance", self.validation_guidance, 0.0, 100.0)
        check_choice("train.lr_schedule", self.lr_schedule, ("cosine", "constant"))
        check_choice("train.mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16"))


@dataclass
class GANConfig:
    """How a GAN (model.family: gan) is trained, beside train.*: two optimisers (TTUR), the discriminator's loss terms,
    augmentation and the sampling truncation written into its model.json."""

    generator_lr: float = 1e-4
    discriminator_lr: float = 4e-4  # TTUR: the discriminator learns faster
    adam_beta1: float = 0.0
    adam_beta2: float = 0.9
    mismatched_captions: bool = True  # real images with another garment's caption are negatives too
    ma_gp_weight: float = 2.0  # matching-aware gradient penalty (DF-GAN)
    ma_gp_power: float = 6.0
    ma_gp_every: int = 4  # lazy regularisation (StyleGAN2): the penalty every k steps, weighted k; it costs a third of a step
    augment: str = "color,translation,cutout"  # DiffAugment policy on every image the discriminator sees ('' = none)
    truncation: float = 1.0  # default sampling truncation: latent values beyond it (in std) are redrawn; 0 = none
    collapse_window: int = 200  # steps over which a pinned D loss or collapsing batch diversity is reported

    def __post_init__(self) -> None:
        for key in ("generator_lr", "discriminator_lr"):
            check_range(f"gan.{key}", getattr(self, key), 0.0, 1.0)
        for key in ("adam_beta1", "adam_beta2"):
            check_range(f"gan.{key}", getattr(self, key), 0.0, 0.9999)
        check_range("gan.ma_gp_weight", self.ma_gp_weight, 0.0, 1e6)
        check_range("gan.ma_gp_power", self.ma_gp_power, 1.0, 12.0)
        check_range("gan.ma_gp_every", self.ma_gp_every, 1, 1 << 20)
        check_range("gan.truncation", self.truncation, 0.0, 10.0)
        check_range("gan.collapse_window", self.collapse_window, 10, 1 << 30)
        unknown = [p.strip() for p in self.augment.split(",") if p.strip() and p.strip() not in ("color", "translation", "cutout")]
        if unknown:
            raise ConfigError(f"gan.augment: '{unknown[0]}' is not one of color, translation, cutout")


@dataclass
class UpsamplerConfig:
    """How an upsampler (model.family: upsampler; its input size is model.low_res_resolution, its output
    data.resolution) is trained, beside train.*: high-res patches and the degradations that make their low-res inputs,
    the loss weights, and two optimisers. L1 alone for the first `adversarial_start` steps (ESRGAN's PSNR-oriented
    start), then L1 + adversarial + feature matching on its own patch discriminator."""

    patch_size: int = 128  # high-res patch side cropped from each photo (its input is patch_size / scale)
    generator_lr: float = 2e-4
    discriminator_lr: float = 2e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    l1_weight: float = 1.0
    adversarial_weight: float = 0.01
    feature_weight: float = 0.1  # L1 between the discriminator's features of the output and of the photo
    adversarial_start: int = 1000  # steps of L1 alone before the discriminator joins
    blur_prob: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.5])  # gaussian [min, max], high-res pixels
    kernels: list[str] = field(default_factory=lambda: ["area", "bilinear", "bicubic"])  # downsampling, one drawn per image
    noise_prob: float = 0.3
    noise_sigma: list[float] = field(default_factory=lambda: [1.0, 6.0])  # [min, max] in 8-bit levels
    jpeg_prob: float = 0.2
    jpeg_quality: list[int] = field(default_factory=lambda: [75, 95])  # [min, max]
    validation_images: int = 8  # validation photos in the PSNR and the picture at each validation

    def __post_init__(self) -> None:
        check_range("upsampler.patch_size", self.patch_size, 8, 4096)
        for key in ("generator_lr", "discriminator_lr"):
            check_range(f"upsampler.{key}", getattr(self, key), 0.0, 1.0)
        for key in ("adam_beta1", "adam_beta2"):
            check_range(f"upsampler.{key}", getattr(self, key), 0.0, 0.9999)
        for key in ("l1_weight", "adversarial_weight", "feature_weight"):
            check_range(f"upsampler.{key}", getattr(self, key), 0.0, 1e6)
        for key in ("blur_prob", "noise_prob", "jpeg_prob"):
            check_range(f"upsampler.{key}", getattr(self, key), 0.0, 1.0)
        check_range("upsampler.adversarial_start", self.adversarial_start, 0, 1 << 40)
        check_range("upsampler.validation_images", self.validation_images, 1, 1024)
        for key, low, high in (("blur_sigma", 0.01, 10.0), ("noise_sigma", 0.0, 64.0), ("jpeg_quality", 1, 100)):
            pair = getattr(self, key)
            if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
                raise ConfigError(f"upsampler.{key}: expected [min, max] with {low} <= min <= max <= {high}, got {pair}")
        unknown = [k for k in self.kernels if k not in ("area", "bilinear", "bicubic")]
        if not self.kernels or unknown:
            raise ConfigError(f"upsampler.kernels: expected some of area, bilinear, bicubic, got {self.kernels}")


@dataclass
class DistillConfig:
    """How a few-step student (model.family: student) is distilled from its teacher (train.init_from, a diffusion
    model): latent consistency distillation with the guidance scale as an input, low-rank adapters on the teacher's
    weights, the teacher's guided DDIM step on a grid of `grid_size` timesteps as the ODE solver, and an EMA of the
    student as the target network (and what is exported)."""

    lora_rank: int = 8  # adapters' rank on every conv and linear layer (rank 8: 1.1M parameters, 2.3 MB in float16)
    guidance_features: int = 64  # sinusoidal features of the guidance scale before its MLP
    guidance_min: float = 1.0  # the guidance scales the student learns, drawn uniformly per example
    guidance_max: float = 6.0
    grid_size: int = 50  # solver timesteps (skip = num_train_timesteps / grid_size)
    huber_c: float = 0.001  # pseudo-Huber constant (images in [-1, 1])
    target_ema_decay: float = 0.95  # the target network's EMA (LCM's); the export is this EMA
    validation_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # the picture's columns
    # a student (its folder) of this teacher, or of a model the teacher was continued from (train.init_from), whose
    # adapters start a new run: to continue one, or to re-distil from a continued teacher
    init_student: str = ""

    def __post_init__(self) -> None:
        check_range("distill.lora_rank", self.lora_rank, 1, 4096)
        check_range("distill.guidance_features", self.guidance_features, 2, 4096)
        check_range("distill.guidance_min", self.guidance_min, 0.0, 50.0)
        check_range("distill.guidance_max", self.guidance_max, self.guidance_min, 50.0)
        check_range("distill.grid_size", self.grid_size, 1, 100_000)
        check_range("distill.huber_c", self.huber_c, 0.0, 10.0)
        check_range("distill.target_ema_decay", self.target_ema_decay, 0.0, 1.0)
        if self.guidance_features % 2:
            raise ConfigError(f"distill.guidance_features: {self.guidance_features} must be even (sin and cos pairs)")
        for steps in self.validation_steps:
            check_range("distill.validation_steps", steps, 1, self.grid_size)


@dataclass
class CriticConfig:
    """The text-image critic (evaluation/critic.py; trained by train/critic.py): a small CNN and a caption projection
    trained contrastively."""

    resolution: int = 64  # images are resized to this (with data.resize_mode) before the image tower
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # image tower stages, each halves the size
    embed_dim: int = 256  # shared image-text embedding size
    text_hidden: int = 512  # hidden width of the caption projection MLP
    token_attention: bool = True  # also attention-pool the caption's token states (not only the pooled vector)
    attributes: list[str] = field(default_factory=lambda: ["category", "gender", "colour", "season"])  # auxiliary heads
    attribute_loss_weight: float = 0.5  # loss = InfoNCE + weight * mean attribute cross-entropy
    max_steps: int = 3000
    batch_size: int = 128  # per process; every other caption in the batch is a negative
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # cosine | constant (both after a linear warmup)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    max_grad_norm: float = 1.0  # 0 disables clipping
    hflip: bool = True
    mixed_precision: str = "auto"  # auto (bf16 on a CUDA GPU or a CPU with bf16 kernels, no elsewhere) | no | fp16 | bf16
    fused_adam: bool = True  # fused AdamW kernel where the device has one (CUDA)
    log_every: int = 10
    validate_every: int = 250  # steps between validations (0: only at the end)
    validation_items: int = 2000  # validation images used (evenly spaced), 0: all
    num_distractors: int = 99  # R-precision: wrong captions ranked against the true one
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    output_dir: str = "runs/critic"  # checkpoints, metrics.jsonl and the final critic.safetensors + critic.json

    def __post_init__(self) -> None:
        check_range("critic.resolution", self.resolution, 8, 1024)
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"critic.channels: needs at least one positive width, got {self.channels}")
        if self.resolution % (2 ** len(self.channels)):
            raise ConfigError(f"critic.resolution: {self.resolution} is not divisible by 2^{len(self.channels)} "
                              "(the image tower halves it once per critic.channels entry)")
        for key in ("embed_dim", "text_hidden", "max_steps", "batch_size", "log_every", "checkpoint_every",
                    "keep_checkpoints", "num_distractors"):
            check_range(f"critic.{key}", getattr(self, key), 1, 1 << 40)
        for key in ("warmup_steps", "validate_every", "validation_items"):
            check_range(f"critic.{key}", getattr(self, key), 0, 1 << 40)
        check_range("critic.learning_rate", self.learning_rate, 0.0, 1e12)
        check_range("critic.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("critic.attribute_loss_weight", self.attribute_loss_weight, 0.0, 1e6)
        check_range("critic.max_grad_norm", self.max_grad_norm, 0.0, 1e12)
        check_choice("critic.lr_schedule", self.lr_schedule, ("cosine", "constant"))
        check_choice("critic.mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16"))


@dataclass
class Config:
    """Everything one run needs; saved next to every run and inside every checkpoint."""

    name: str = "default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)  # used by train/critic.py only
    gan: GANConfig = field(default_factory=GANConfig)  # used when model.family is gan
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)  # used when model.family is upsampler
    distill: DistillConfig = field(default_factory=DistillConfig)  # used when model.family is student
