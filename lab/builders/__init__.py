"""Model folders with random weights from configs: tiny ones (tests), real-size ones (GPU benchmarks)."""
