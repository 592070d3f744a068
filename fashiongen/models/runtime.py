"""Fast inference for a FashionUNet: the same network behind a callable that runs on the fastest path this machine has.

    denoiser = fast_forward(model, weights_sha256, runtime="auto", dtype="auto")
    output = denoiser(x, t, token_states, mask, pooled, attribute_ids, low_res)  # fp32 [B, 3, H, W], as sample() expects
    denoiser.description  # {"runtime": "onnxruntime", "dtype": "float32"}: what was used, after any fallback

Runtimes (docs/fast-path.md has the measurements behind the choices):
* eager: the nn.Module as loaded.
* channels_last: the module's conv weights and its input in NHWC, which oneDNN's convolutions prefer.
* onnxruntime: the network exported to ONNX (batch and caption length dynamic), cached on disk keyed by the
  weights' sha256 and the input signature, run by ONNX Runtime's CPU kernels; float32 only.
* auto: bfloat16 on channels_last where oneDNN has bf16 kernels (AVX-512 BF16 / AMX), else float32 on onnxruntime
  when it is installed (measured fastest on an AVX2 machine), else float32 channels_last.

bfloat16 and float16 run under torch.autocast with the convolution and linear weights cast once to the low
precision: convolutions and matmuls in the low precision, norms and softmax in float32, the output cast to float32
(the scheduler's arithmetic in sample() is float32 throughout). A low precision the CPU has no fast kernels for
(PyTorch then falls back to aten::_slow_conv2d_forward, ~50x slower than float32) is replaced by float32, and a
runtime that is not installed by the best installed one, each with one warning line. torch.compile (and OpenVINO)
were measured too and never won (minutes to compile; at best the speed of the bf16 path here), so neither is offered.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..utils import atomic_path
from .student import StudentUNet

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "eager", "channels_last", "onnxruntime")
RUNTIME_DTYPES = ("auto", "float32", "bfloat16", "float16")
ONNX_OPSET = 17
CACHE_FORMAT = 1  # part of every cache key: bump when the exported graph changes meaning
INPUT_NAMES = ("sample", "timesteps", "text_states", "text_mask", "text_pooled", "attribute_ids", "low_res", "guidance")


@dataclass(frozen=True)
class CpuSupport:
    """What this CPU runs fast: oneDNN's bf16/fp16 kernels (the ones that matter) and the ISA flags behind them."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", ...
    bf16: bool  # oneDNN bf16 convolutions/matmuls (AVX-512 BF16 or AMX); without them bf16 convs use a slow reference loop
    fp16: bool  # oneDNN fp16 kernels (AVX-512 FP16 / AMX-FP16)
    flags: tuple[str, ...]  # the relevant /proc/cpuinfo flags present: avx2, avx512f, avx512_bf16, avx512_vnni, amx_*

    def fast(self, dtype: str) -> bool:
        return dtype == "float32" or (dtype == "bfloat16" and self.bf16) or (dtype == "float16" and self.fp16)


def cpu_support() -> CpuSupport:
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_fp16", "amx_int8")
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    mkldnn = torch.ops.mkldnn
    return CpuSupport(torch.backends.cpu.get_cpu_capability(),
                      bool(torch.backends.mkldnn.is_available() and mkldnn._is_mkldnn_bf16_supported()),
                      bool(torch.backends.mkldnn.is_available() and mkldnn._is_mkldnn_fp16_supported()),
                      tuple(flag for flag in wanted if flag in flags))


def onnxruntime_module() -> Any | None:
    """onnxruntime if it (and onnx, which the exporter needs) can be imported, else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def default_cache_dir() -> Path:
    """$FASHIONGEN_CACHE/runtime, else ~/.cache/fashiongen/runtime ($XDG_CACHE_HOME respected)."""
    if root := os.environ.get("FASHIONGEN_CACHE"):
        return Path(root).expanduser() / "runtime"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fashiongen" / "runtime"


def resolve(runtime: str, dtype: str, device: torch.device | str = "cpu",
            support: CpuSupport | None = None) -> tuple[str, str, list[str]]:
    """(runtime, dtype) to use for a request, and the reasons for each substitution (one warning line each)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got '{runtime}'")
    if dtype not in RUNTIME_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(RUNTIME_DTYPES)}, got '{dtype}'")
    notes: list[str] = []
    if torch.device(device).type != "cpu":  # the GPU's own kernels: autocast in the asked dtype, no export
        if runtime == "onnxruntime":
            notes.append(f"runtime onnxruntime runs on the CPU only; using eager on {device}")
        return "eager", "float32" if dtype == "auto" else dtype, notes
    support = support or cpu_support()
    if dtype == "auto":
        dtype = "bfloat16" if support.bf16 and runtime != "onnxruntime" else "float32"
    elif not support.fast(dtype):
        notes.append(f"{dtype} has no fast kernels on this CPU ({support.capability}; oneDNN bf16 "
                     f"{'yes' if support.bf16 else 'no'}, fp16 {'yes' if support.fp16 else 'no'}); using float32")
        dtype = "float32"
    if runtime == "onnxruntime" and dtype != "float32":
        notes.append(f"runtime onnxruntime runs float32 only here; using channels_last for {dtype}")
        runtime = "channels_last"
    if runtime == "auto":
        runtime = "onnxruntime" if dtype == "float32" and onnxruntime_module() is not None else "channels_last"
    elif runtime == "onnxruntime" and onnxruntime_module() is None:
        notes.append("runtime onnxruntime is not installed (the 'fast' extra: pip install 'fashiongen[fast]'); using channels_last")
        runtime = "channels_last"
    return runtime, dtype, notes


class FastForward:
    """A FashionUNet's forward behind a faster runtime: model(x, t, token_states, mask, pooled, attribute_ids, low_res)
    -> float32 [B, 3, H, W] whatever runs inside."""

    def __init__(self, run: Callable[..., Tensor], runtime: str, dtype: str, device: torch.device,
                 cache_file: Path | None = None, module: nn.Module | None = None) -> None:
        self._run, self.runtime, self.dtype, self.device, self.cache_file = run, runtime, dtype, device, cache_file
        self.module = module  # the torch module that runs (its own copy where weights were cast); None for a graph

    @property
    def description(self) -> dict[str, str]:
        return {"runtime": self.runtime, "dtype": self.dtype}

    def __call__(self, sample: Tensor, timesteps: Tensor, text_states: Tensor, text_mask: Tensor, text_pooled: Tensor,
                 attribute_ids: Tensor | None = None, low_res: Tensor | None = None, guidance: Tensor | None = None) -> Tensor:
        """`guidance` [B]: a student's guidance scale (models/student.py); None for a FashionUNet."""
        if guidance is None:
            return self._run(sample, timesteps, text_states, text_mask, text_pooled, attribute_ids, low_res).float()
        return self._run(sample, timesteps, text_states, text_mask, text_pooled, attribute_ids, low_res, guidance).float()


LOW_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_module(model: nn.Module, runtime: str, dtype: str) -> nn.Module:
    """`model` for a torch runtime (eager or channels_last) in a resolved `dtype`: itself for eager float32, else a copy
    (the caller's module stays as it was) with NHWC weights for channels_last and, for a low precision, its convolution
    and linear weights cast once (autocast would copy every weight at every forward: 0.22 -> 0.19 s a batch-8 UNet
    forward on an AVX-512 BF16 CPU); norms stay float32. Run it under `low_precision(dtype)`."""
    parameter = next(model.parameters())
    if runtime == "eager" and dtype == "float32" and parameter.dtype == torch.float32:
        return model
    network = copy.deepcopy(model).float()
    if runtime == "channels_last":
        network = network.to(memory_format=torch.channels_last)
    if dtype in LOW_DTYPES:
        for module in network.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.to(LOW_DTYPES[dtype])
    return network


def low_precision(dtype: str, device_type: str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """torch.autocast in a low `dtype` (convolutions and matmuls low, norms and softmax float32); nothing for float32."""
    if dtype not in LOW_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=LOW_DTYPES[dtype])


def fast_forward(model: nn.Module, weights_sha256: str, runtime: str = "auto", dtype: str = "auto",
                 cache_dir: str | Path | None = None) -> FastForward:
    """`model` (a FashionUNet, left untouched) as a FastForward on `runtime` in `dtype`; substitutions are logged."""
    parameter = next(model.parameters())
    runtime, dtype, notes = resolve(runtime, dtype, parameter.device)
    weights_sha256 = weights_sha256 or state_sha256(model)
    for note in notes:
        logger.warning(note)
    if runtime == "onnxruntime":
        return _onnxruntime_forward(model, weights_sha256, Path(cache_dir) if cache_dir else default_cache_dir())
    network = torch_module(model, runtime, dtype)
    device_type = parameter.device.type

    def run(sample: Tensor, *rest: Any) -> Tensor:
        if runtime == "channels_last":
            sample = sample.contiguous(memory_format=torch.channels_last)
        with low_precision(dtype, device_type):
            return network(sample.float(), *rest)

    return FastForward(run, runtime, dtype, parameter.device, module=network)


# ---------------------------------------------------------------- ONNX Runtime


class _Exportable(nn.Module):
    """The UNet with the optional inputs it takes made positional and the ones it does not dropped (ONNX has no None)."""

    def __init__(self, model: nn.Module, attributes: bool, low_res: bool, guidance: bool = False) -> None:
        super().__init__()
        self.model, self.attributes, self.low_res, self.guidance = model, attributes, low_res, guidance

    def forward(self, *inputs: Tensor) -> Tensor:
        sample, timesteps, states, mask, pooled, *rest = inputs
        ids = rest.pop(0) if self.attributes else None
        low = rest.pop(0) if self.low_res else None
        if self.guidance:
            return self.model(sample, timesteps, states, mask, pooled, ids, low, rest.pop(0))
        return self.model(sample, timesteps, states, mask, pooled, ids, low)


def input_signature(model: nn.Module) -> dict[str, Any]:
    """What the exported graph's inputs look like, batch and caption length aside (both dynamic). A student
    (models.student.StudentUNet, its adapters merged) takes its guidance scale [B] as one more input."""
    guided = isinstance(model, StudentUNet)
    unet = model.unet.unet if guided else model.unet
    return {"in_channels": unet.config.in_channels, "resolution": model.resolution,
            "text_dim": unet.config.cross_attention_dim, "attributes": len(model.attribute_vocab),
            "low_res": bool(model.super_resolution), "guidance": guided}


def cache_path(cache_dir: Path, weights_sha256: str, signature: dict[str, Any], dtype: str = "float32") -> Path:
    """The cached graph for these weights and inputs: unet-<sha256[:16]>-onnxruntime-<dtype>-<signature hash>.onnx."""
    key = json.dumps({"format": CACHE_FORMAT, "opset": ONNX_OPSET, **signature}, sort_keys=True)
    return cache_dir / f"unet-{weights_sha256[:16]}-onnxruntime-{dtype}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.onnx"


def state_sha256(model: nn.Module) -> str:
    """A checksum of the weights themselves, for a model that came without one."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _example_inputs(model: nn.Module, signature: dict[str, Any]) -> tuple[Tensor, ...]:
    batch, tokens, size = 2, 8, signature["resolution"]
    inputs = [torch.zeros(batch, 3, size, size), torch.full((batch,), 500, dtype=torch.long),
              torch.zeros(batch, tokens, signature["text_dim"]), torch.ones(batch, tokens, dtype=torch.bool),
              torch.zeros(batch, signature["text_dim"])]
    if signature["attributes"]:
        inputs.append(torch.zeros(batch, signature["attributes"], dtype=torch.long))
    if signature["low_res"]:
        inputs.append(torch.zeros(batch, 3, size, size))
    if signature["guidance"]:
        inputs.append(torch.full((batch,), 3.0))
    return tuple(inputs)


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export `model` (float32, CPU) to `path` atomically, batch and caption length dynamic; a .json beside it records
    the file's sha256, which a later load checks before trusting the file."""
    signature = input_signature(model)
    names = [*INPUT_NAMES[:5], *(["attribute_ids"] if signature["attributes"] else []),
             *(["low_res"] if signature["low_res"] else []), *(["guidance"] if signature["guidance"] else [])]
    axes = {name: {0: "batch"} for name in names} | {"text_states": {0: "batch", 1: "tokens"},
                                                     "text_mask": {0: "batch", 1: "tokens"}, "output": {0: "batch"}}
    network = _Exportable(copy.deepcopy(model).float().cpu().eval(), bool(signature["attributes"]), signature["low_res"],
                          signature["guidance"])
    with atomic_path(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about diffusers' shape checks, and the exporter's deprecation
        # the TorchScript exporter: torch.export (dynamo=True) fails on diffusers' attention with a dynamic batch
        torch.onnx.export(network, _example_inputs(model, signature), str(temporary), dynamo=False, input_names=names,
                          output_names=["output"], dynamic_axes=axes, opset_version=ONNX_OPSET)
        record = {"sha256": _file_sha256(temporary), "signature": signature, "torch": torch.__version__}
    with atomic_path(path.with_suffix(".json")) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _trusted(path: Path) -> bool:
    """The cached graph exists and is byte for byte the file that was exported (sha256 in the .json beside it)."""
    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return path.is_file() and record.get("sha256") == _file_sha256(path)
    except (OSError, ValueError, AttributeError):
        return False


def _onnxruntime_forward(model: nn.Module, weights_sha256: str, cache_dir: Path) -> FastForward:
    onnxruntime = onnxruntime_module()
    signature = input_signature(model)
    path = cache_path(cache_dir, weights_sha256, signature)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # follow torch's thread setting (and any pinning)
    options.inter_op_num_threads = 1
    # no busy-waiting between runs: spinning threads slowed the torch work after each run in the same process (a torch
    # forward 0.36 -> 0.40-0.42 s; the app's other models, the text encoder, an upsampling stage) for ~4% on the graph's own
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = None
    if _trusted(path):
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for an unreadable graph
            logger.warning("%s: cached graph unreadable (%s); exporting again", path, str(error).splitlines()[0][:200])
    elif path.exists():
        logger.warning("%s: cached graph does not match its checksum; exporting again", path)
    if session is None:
        export_onnx(model, path)
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]

    def run(*inputs: Tensor | None) -> Tensor:
        arrays = [tensor.detach().cpu().numpy() for tensor in inputs if tensor is not None]
        if len(arrays) != len(names):
            raise ValueError(f"the exported graph takes {', '.join(names)}; got {len(arrays)} inputs")
        feed = {name: array.astype("float32") if array.dtype.kind == "f" else array for name, array in zip(names, arrays)}
        return torch.from_numpy(session.run(None, feed)[0])

    return FastForward(run, "onnxruntime", "float32", torch.device("cpu"), path)


__all__ = ["RUNTIMES", "RUNTIME_DTYPES", "CpuSupport", "FastForward", "cache_path", "cpu_support", "default_cache_dir",
           "export_onnx", "fast_forward", "input_signature", "low_precision", "onnxruntime_module", "resolve", "torch_module"]
