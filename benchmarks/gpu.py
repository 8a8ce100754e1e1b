"""The pipeline against a bare diffusers loop on CUDA, with real-size Stable Diffusion 1.5 and SDXL.

    python -m benchmarks.gpu [--gpu-models sd15 sdxl] [--compile] [--dtype bf16] [--images N] [--quick]

Refuses to run without CUDA. Builds real-size SD 1.5 and SDXL folders with random weights
(`lab.builders.real_size`, once, under --models-dir), then for SD 1.5 at 512x512, 25 steps and SDXL at
1024x1024, 20 steps, both with classifier-free guidance, runs `bare` and `pipeline` (QC, watermark,
provenance, local writes) in --dtype (bf16 default) with channels-last, SDPA attention (diffusers' default
on torch 2) and, with --compile, the UNet compiled in place as diffgen does. It reports images/s per GPU
and the generation GPU's busy fraction: for the bare loop from CUDA events around every UNet call; for the
pipeline from NVML sampling when pynvml is installed, and always the estimate
`pipeline images/s x UNet GPU seconds per image (bare)`. Rates are computed as in `benchmarks.overhead`.

Results: benchmarks/results/pipeline-gpu-<gpu>.json (with --quick: out/benchmarks/), and a table on stdout;
`python -m benchmarks.pipeline --gpu` runs the same.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from benchmarks.environment import prepare_environment
from benchmarks.paths import MODELS_DIR
from benchmarks.ratios import RATIOS, ratios
from benchmarks.results import PIPELINE_BENCHMARK, settings_of
from benchmarks.runner import add_common_arguments, check_arguments, record
from benchmarks.session import session, summarise
from benchmarks.variants import GPU_VARIANTS


@dataclass(frozen=True)
class GpuModel:
    architecture: str  # a key of lab.builders.real_size.ARCHITECTURES
    width: int
    steps: int
    guidance_scale: float
    batch_size: int
    images: int
    target_images_per_s: float  # issue #8, per H100, bf16 and compiled


GPU_MODELS = {
    "sd15": GpuModel("sd15", 512, 25, 7.5, batch_size=8, images=128, target_images_per_s=6.8),
    "sdxl": GpuModel("sdxl", 1024, 20, 5.0, batch_size=4, images=48, target_images_per_s=1.1),
}


def add_gpu_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    gpu = parser.add_argument_group("GPU mode")
    gpu.add_argument("--gpu-models", nargs="+", choices=sorted(GPU_MODELS), default=sorted(GPU_MODELS))
    gpu.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    gpu.add_argument("--compile", action="store_true", help="torch.compile the UNet (diffgen's compute.torch_compile)")
    gpu.add_argument(
        "--models-dir",
        type=Path,
        default=MODELS_DIR,
        help="where the real-size folders are built once (default examples/models/, git-ignored)",
    )
    gpu.add_argument("--clip-bpe", type=Path, help="CLIP's bpe_simple_vocab_16e6.txt.gz for the real tokenizer")
    return gpu


def cuda_missing() -> str | None:
    """Why the GPU mode cannot run here, or None."""
    if torch.cuda.is_available():
        return None
    return (f"--gpu needs CUDA, and torch {torch.__version__} sees none (CUDA build: {torch.version.cuda}); "
            "nothing was run")  # fmt: skip


def model_overrides(m: GpuModel, folder: Path, args: argparse.Namespace) -> list[str]:
    """The example job set to the model's published size, steps, guidance and batch, on CUDA."""
    return [
        f"model.id={folder.resolve()}",
        f"sampler.width={m.width}",
        f"sampler.height={m.width}",
        f"sampler.steps={m.steps}",
        f"sampler.guidance_scale={m.guidance_scale}",
        f"compute.batch_size={m.batch_size}",
        "compute.device=cuda",
        # The QC actor reserves a quarter GPU next to the generator (diffgen.pipelines.qc.qc_map).
        "compute.gpus_per_actor=0.75",
        f"compute.dtype={args.dtype}",
        "compute.channels_last=true",
        f"compute.torch_compile={str(args.compile).lower()}",
    ]


def gpu_summary(summary: dict[str, dict], m: GpuModel) -> dict:
    """Images/s per GPU against the target, and how busy the generation GPU was."""
    bare, pipe = summary["bare"], summary["pipeline"]
    per_image = [r["unet_gpu_s_per_image"] for r in bare["runs"] if r.get("unet_gpu_s_per_image")]
    busy_bare = [r["gpu_busy_fraction_unet"] for r in bare["runs"] if r.get("gpu_busy_fraction_unet")]
    rate = pipe["steady_images_per_s"]
    return {
        "images_per_s_per_gpu": {"bare": bare["steady_images_per_s"], "pipeline": rate},
        "target_images_per_s": m.target_images_per_s,
        "passed": None if not rate else rate >= m.target_images_per_s,
        "busy_fraction_bare_cuda_events": round(statistics.median(busy_bare), 4) if busy_bare else None,
        "busy_fraction_pipeline_nvml": [r.get("gpu_busy_fraction_nvml") for r in pipe["runs"]],
        "busy_fraction_pipeline_estimate": (
            round(rate * statistics.median(per_image), 4) if per_image and rate else None
        ),
        "busy_fraction_method": "bare: UNet spans from CUDA events over the batches after the first / "
        "their wall time; pipeline: NVML utilisation between the first and last write when pynvml is "
        "installed, and the estimate pipeline images/s x UNet GPU seconds per image (bare)",
    }


def measure_model(args: argparse.Namespace, name: str) -> dict:
    """One model's block: the real-size folder built if missing, then bare and pipeline in one session."""
    from lab.builders.real_size import build_real_size

    m = GPU_MODELS[name]
    if args.quick:
        m = replace(m, images=2 * m.batch_size)
    images = args.images or m.images
    images = -(-images // m.batch_size) * m.batch_size  # whole batches: a compiled UNet keeps one shape
    folder = args.models_dir / f"{name}-real-size"
    if not (folder / "model_index.json").is_file():
        print(f"building {name} with random weights in {folder}", flush=True)
        build_real_size(name, folder, device="cuda", bpe=args.clip_bpe)
    variants = list(GPU_VARIANTS)
    with tempfile.TemporaryDirectory(prefix="diffgen-bench-", dir=args.models_dir) as tmp:
        s = session(variants, args.job, model_overrides(m, folder, args), images, args.repeats, Path(tmp), gpu=True)
    summary = summarise(s.runs, variants)
    return {
        "settings_line": f"{name} real-size (random weights), {m.width}x{m.width}, {m.steps} steps, CFG "
        f"{m.guidance_scale}, batch {m.batch_size}, {args.dtype}, channels-last, "
        f"{'compiled' if args.compile else 'eager'}, {images} images x {args.repeats}",
        "settings": settings_of(s.spec, images, args.repeats),
        "variants": summary,
        "ratios": ratios(summary, {"pipeline_over_bare": RATIOS["pipeline_over_bare"]}),
        "gpu": gpu_summary(summary, m),
        "same_images": s.same_images,
    }


def measure_gpu(args: argparse.Namespace) -> dict:
    """The results file's `models`: one block per real-size model."""
    return {name: measure_model(args, name) for name in args.gpu_models}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "images per model (sd15 128, sdxl 48; --quick: 2 batches)")
    add_gpu_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args, ())
    if (why := cuda_missing()) is not None:
        print(why, file=sys.stderr)
        return 2
    prepare_environment()
    return record(args, argv, module="benchmarks.gpu", result_name="pipeline", benchmark=PIPELINE_BENCHMARK, gpu=True,
                  measure=lambda: measure_gpu(args))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
