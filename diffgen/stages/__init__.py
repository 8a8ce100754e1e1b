"""Pipeline stages as plain classes: `setup()` once (load weights), then `__call__(batch)` per Arrow batch.

Each stage declares the columns it reads and adds; `diffgen.stages.chain.check_chain` verifies
a recipe before any model loads. Ray wraps these in `pipelines/`; here they run and test without
a cluster.

Import a stage from its own module (`diffgen.stages.write`, ...), never from here: a Ray worker
that unpickles the write stage must not import torch and diffusers for the generation stage.
"""
