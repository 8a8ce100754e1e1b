"""Benchmarks: a runner and one script per question; not part of the product or the test suite.

Run from the repository root, as modules (nothing here changes `sys.path` or the environment on import):

    python -m benchmarks.pipeline            every CPU question in one session (or --gpu: the GPU question)
    python -m benchmarks.overhead            the pipeline against a bare diffusers loop
    python -m benchmarks.scaling             actors and threads on the same cores
    python -m benchmarks.stage_profile       generate / QC / write per image, one thread, no Ray
    python -m benchmarks.gpu                 real-size SD 1.5 and SDXL on CUDA
    python -m benchmarks.watermark_robustness

The runner's pieces, one thing each: `variants` (the registry), `measurement` (a run's numbers and the
steady rate), `ratios`, `session` (interleaved repeats and medians), `bare_loop`, `pipeline_run`,
`loopback_s3`, `process_cpu` and `gpu_timing` (samplers), `machine`, `results` and `table` (the results
file and its table), `environment`, `paths`, and `runner` (the command line and the flow every script shares).
"""
