"""Ray composition: diffgen's stages wired into Ray Data pipelines."""
