"""The fast inference path (fashiongen.models.runtime): the shipped model on it makes the images fp32 eager makes,
the exported graph is cached by weights and reused, and a missing runtime or a dtype without fast kernels falls
back with a warning instead of failing."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fashiongen.models.runtime import CpuSupport, cache_path, cpu_support, fast_forward, input_signature, onnxruntime_module, resolve
from fashiongen.pipeline import FashionGenPipeline, default_model_path
from model_helpers import make_text, tiny_model

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a red floral midi dress with short sleeves", "a black leather biker jacket with silver zips"]
# the tolerance the fast path is held to, in 8-bit levels over 4 images x 4 guided DPM++ steps at 64 px (measured:
# onnxruntime and channels_last float32 differ from eager float32 by at most 1 level, in under 0.01% of values)
MAX_LEVELS, MEAN_LEVELS = 2, 0.02
# bfloat16 (8 mantissa bits) is held to a mean and a 99th percentile instead: a few pixels at sharp edges move further
# (measured on an AVX-512 BF16 CPU, same images: mean 0.72, 99th percentile 5, max 31 levels)
BF16_MEAN_LEVELS, BF16_P99_LEVELS = 1.5, 8
needs_bf16 = pytest.mark.skipif(not cpu_support().bf16, reason="no oneDNN bfloat16 kernels on this CPU (the fallback "
                                                               "to float32 is tested instead)")
needs_onnxruntime = pytest.mark.skipif(onnxruntime_module() is None, reason="onnxruntime not installed")


def pixels(pipe: FashionGenPipeline) -> np.ndarray:
    images = pipe(PROMPTS, num_images_per_prompt=2, num_inference_steps=4, seed=0)
    return np.stack([np.asarray(image) for image in images]).astype(np.int16)  # [4, 64, 64, 3]


def base(runtime: str = "eager", dtype: str = "float32", cache: Path | None = None) -> FashionGenPipeline:
    pipe = FashionGenPipeline.from_pretrained(default_model_path(), runtime=runtime, dtype=dtype,
                                              runtime_cache_dir=cache).base_only()  # the 64 px design: what sampling costs
    pipe.show_progress = False
    return pipe


@pytest.fixture(scope="module")
def eager_pixels() -> np.ndarray:
    return pixels(base())


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-cache")  # one export of the shipped graph for the module


@pytest.mark.slow  # among the slowest of the fast tier (shipped models or a training run): full run only
@pytest.mark.parametrize("runtime", ["channels_last", pytest.param("onnxruntime", marks=needs_onnxruntime)])
def test_the_fast_path_makes_the_shipped_models_images_within_tolerance(runtime: str, eager_pixels: np.ndarray,
                                                                       graph_cache: Path) -> None:
    pipe = base(runtime, "float32", graph_cache)
    difference = np.abs(pixels(pipe) - eager_pixels)
    assert difference.max() <= MAX_LEVELS and difference.mean() <= MEAN_LEVELS, (difference.max(), difference.mean())
    assert pipe.runtime == f"{runtime} float32" and pipe.describe()["runtime"] == pipe.runtime


@needs_bf16
def test_bfloat16_on_channels_last_makes_the_shipped_models_images_within_its_tolerance(eager_pixels: np.ndarray) -> None:
    pipe = base("channels_last", "bfloat16")
    assert pipe.runtime == "channels_last bfloat16"
    convolution = next(m for m in pipe.stages[0].denoiser.module.modules() if isinstance(m, torch.nn.Conv2d))
    norm = next(m for m in pipe.stages[0].denoiser.module.modules() if isinstance(m, torch.nn.GroupNorm))
    assert convolution.weight.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32  # norms stay float32
    assert next(pipe.stages[0].model.parameters()).dtype == torch.float32  # the loaded module is left as it was
    difference = np.abs(pixels(pipe) - eager_pixels)
    assert 0 < difference.mean() <= BF16_MEAN_LEVELS and np.percentile(difference, 99) <= BF16_P99_LEVELS, \
        (difference.mean(), np.percentile(difference, 99))


def test_auto_picks_bfloat16_only_with_fast_kernels_else_float32_on_the_fastest_installed_runtime() -> None:
    runtime, dtype, notes = resolve("auto", "auto")
    assert not notes
    assert dtype == ("bfloat16" if cpu_support().bf16 else "float32")
    assert runtime == "channels_last" if cpu_support().bf16 or onnxruntime_module() is None else runtime == "onnxruntime"
    assert resolve("auto", "auto", "cuda")[:2] == ("eager", "float32")


@needs_onnxruntime
def test_the_exported_graph_is_cached_by_weights_reused_and_replaced_when_corrupt(tmp_path: Path,
                                                                                 caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model(attribute_vocab={"colour": ["red", "blue"]})
    text = make_text(batch=3)
    inputs = (torch.randn(3, 3, 32, 32), torch.tensor([10, 500, 990]), text.token_states, text.mask, text.pooled,
              torch.tensor([[0], [1], [2]]), None)
    with torch.no_grad():
        expected = model(*inputs)
    first = fast_forward(model, "a" * 64, "onnxruntime", "float32", tmp_path)
    path = cache_path(tmp_path, "a" * 64, input_signature(model))
    assert first.cache_file == path and path.is_file()
    torch.testing.assert_close(first(*inputs), expected, atol=1e-4, rtol=1e-4)
    written = path.stat()

    again = fast_forward(model, "a" * 64, "onnxruntime", "float32", tmp_path)  # reused: the same file, not rewritten
    assert again.cache_file == path and (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)

    other = fast_forward(model, "b" * 64, "onnxruntime", "float32", tmp_path)  # other weights: their own file
    assert other.cache_file != path and other.cache_file.is_file()

    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zero a stretch of the weights
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        repaired = fast_forward(model, "a" * 64, "onnxruntime", "float32", tmp_path)
    assert "exporting again" in caplog.text
    torch.testing.assert_close(repaired(*inputs), expected, atol=1e-4, rtol=1e-4)
    # the batch and the caption length are dynamic axes of the one graph
    short = make_text(batch=1, length=2, real=2)
    with torch.no_grad():
        single = model(inputs[0][:1], inputs[1][:1], short.token_states, short.mask, short.pooled, inputs[5][:1])
    torch.testing.assert_close(repaired(inputs[0][:1], inputs[1][:1], short.token_states, short.mask, short.pooled,
                                        inputs[5][:1], None), single, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_without_onnxruntime_the_pipeline_warns_and_runs_on_torch(tmp_path: Path, eager_pixels: np.ndarray) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules["onnxruntime"] = None  # as if it were not installed
        import numpy as np
        from fashiongen.pipeline import FashionGenPipeline, default_model_path
        pipe = FashionGenPipeline.from_pretrained(default_model_path(), runtime="onnxruntime",
                                                  runtime_cache_dir={str(tmp_path)!r}).base_only()
        pipe.show_progress = False
        images = pipe({PROMPTS[:1]!r}, num_images_per_prompt=2, num_inference_steps=4, seed=0)
        np.save({str(tmp_path / "pixels.npy")!r}, np.stack([np.asarray(image) for image in images]))
        print("RUNTIME", pipe.runtime)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "onnxruntime is not installed" in line]
    assert len(warnings) == 1, done.stderr[-2000:]
    assert "RUNTIME channels_last float32" in done.stdout
    assert not list(tmp_path.glob("*.onnx"))
    difference = np.abs(np.load(tmp_path / "pixels.npy").astype(np.int16) - eager_pixels[:2])  # the first prompt's two
    assert difference.max() <= MAX_LEVELS and difference.mean() <= MEAN_LEVELS


def test_resolve_substitutes_float32_for_a_precision_the_cpu_lacks_and_names_why() -> None:
    avx2 = CpuSupport("AVX2", bf16=False, fp16=False, flags=("avx2",))
    runtime, dtype, notes = resolve("channels_last", "bfloat16", support=avx2)
    assert (runtime, dtype) == ("channels_last", "float32") and len(notes) == 1 and "bfloat16 has no fast kernels" in notes[0]
    assert resolve("auto", "auto", support=avx2)[1] == "float32" and not resolve("auto", "auto", support=avx2)[2]
    bf16 = CpuSupport("AVX512", bf16=True, fp16=False, flags=("avx512f", "avx512_bf16"))
    assert resolve("auto", "auto", support=bf16)[:2] == ("channels_last", "bfloat16")
    assert resolve("channels_last", "float16", support=bf16)[1] == "float32"
    assert resolve("onnxruntime", "auto", support=bf16)[:2] == ("onnxruntime", "float32")


def test_a_low_precision_without_fast_kernels_falls_back_to_float32_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    support = cpu_support()
    if support.bf16:
        pytest.skip(f"this CPU ({support.capability}) has fast bfloat16 kernels: nothing to fall back from")
    with caplog.at_level(logging.WARNING):
        pipe = base("channels_last", "bfloat16")
    assert pipe.runtime == "channels_last float32"
    assert [r for r in caplog.records if "bfloat16 has no fast kernels" in r.getMessage()]
    assert next(pipe.stages[0].model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=needs_bf16)])
def test_the_upsampling_stage_on_the_fast_path_matches_eager_and_still_box_downsamples_to_the_design(dtype: str) -> None:
    from fashiongen.evaluation.restoration import consistency

    eager = FashionGenPipeline.from_pretrained(default_model_path()).stages[1]
    fast = FashionGenPipeline.from_pretrained(default_model_path(), runtime="channels_last", dtype=dtype).stages[1]
    assert eager.family == "upsampler" and fast.runtime == {"runtime": "channels_last", "dtype": dtype}
    assert eager.runtime["runtime"] == "eager" and eager.network is eager.model
    low = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9,
                                          size=(64, 64), mode="bicubic", align_corners=False).clamp(-0.95, 0.95)
    pooled = torch.randn(4, eager.model.text_dim, generator=torch.Generator().manual_seed(1))
    reference, high = eager.upsample(low, pooled), fast.upsample(low, pooled)
    levels = ((high - reference).abs() * 127.5).numpy()
    if dtype == "float32":
        assert levels.max() <= MAX_LEVELS, levels.max()
    else:
        assert 0 < levels.mean() <= BF16_MEAN_LEVELS and np.percentile(levels, 99) <= BF16_P99_LEVELS, levels.mean()
    measured = consistency(high, low)  # back-projection runs in float32 after the network, whatever its precision
    assert measured["mean"] <= 0.1 and measured["p99"] <= 1, measured
    assert next(eager.model.parameters()).dtype == torch.float32 and eager.network is eager.model
