"""micro-sd, the embedded default model family: its procedural world, architectures, training, evaluation, card."""
