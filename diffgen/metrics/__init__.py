"""Quality metrics for generated images: FID, CLIP score and cheap per-image checks.

Kernels (`frechet`, `clip_score.clip_score_kernel`, `image_checks`) are pure functions on
arrays; feature extraction (`backbones`, `clip_model`) and reference I/O (`reference`) are kept
apart from them. Every FID carries its mode (backbone, resize) so numbers stay comparable.
"""
