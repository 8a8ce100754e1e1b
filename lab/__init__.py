"""The lab: what builds and measures models, never imported by the product and left out of the wheel.

`lab.micro` is the embedded default model family's world, architectures, training, evaluation and card;
`lab.builders` writes random-weight model folders (tiny ones for the tests, real-size ones for GPU
benchmarks). Entry points: `python -m lab.train_micro`, `lab.evaluate_micro`, `lab.make_tiny_model`,
`lab.make_real_size_model`.
"""
