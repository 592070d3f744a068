"""Whole-call latency of the default folder's teacher and student, one process per path (ONNX Runtime sessions of
other paths in the same process would spin their thread pools and slow the one being timed).

    for b in "student eager" "student onnxruntime" "student auto" "teacher eager" "teacher onnxruntime" "teacher auto"; do
        OMP_NUM_THREADS=2 python benchmarks/end_to_end.py $b; done > benchmarks/results/end_to_end-avx512-bf16.jsonl

(end_to_end.jsonl: the AVX2 machine of the previous stop, eager and onnxruntime only; end_to_end-avx512-bf16.jsonl: an
AVX-512 BF16 machine, where auto runs bf16 on channels_last.)

Per path: pipe(4 prompts, seed=0, steps, size) at 64 px and at 256 px (the folder's upsampling stage), median of 3
after a warm-up, prompt encoding and PIL conversion included; the student at 1, 2, 4 and 8 steps, the teacher at 20.
Prints one JSON line.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashiongen.pipeline import FashionGenPipeline, default_model_path  # noqa: E402

PROMPTS = ["red floral summer dress", "black leather ankle boots", "men's navy check shirt", "white sneakers"]

base, runtime = sys.argv[1], sys.argv[2]
dtype = sys.argv[3] if len(sys.argv) > 3 else "auto" if runtime == "auto" else "float32"  # auto: bf16 where the CPU has it
torch.set_num_threads(2)
pipe = FashionGenPipeline.from_pretrained(default_model_path(), base=None if base == "teacher" else "student", runtime=runtime,
                                          dtype=dtype)
pipe.show_progress = False
out = {}
for steps in [20] if base == "teacher" else [1, 2, 4, 8]:
    for size in (64, 256):
        def call() -> None:
            pipe(PROMPTS, seed=0, num_inference_steps=steps, size=size)

        call()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        out[f"{base} {pipe.runtime} {steps} steps {size}px"] = round(statistics.median(times), 3)
print(json.dumps(out))
