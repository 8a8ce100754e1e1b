"""Making images: model folders and their checks, loading, schedulers, pipeline variants, sampling,
ControlNet preprocessing, LoRA, reading input images, and the throughput estimate."""
