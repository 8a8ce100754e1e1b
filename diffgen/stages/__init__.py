"""Pipeline stages as plain classes: `setup()` once (load weights), then `__call__(batch)` per Arrow batch.

Each stage declares the columns it reads and adds; `check_chain` verifies a
recipe before any model loads. Ray wraps these in `pipelines/`; here they run
and test without a cluster.
"""

from diffgen.stages.chain import Stage, check_chain
from diffgen.stages.generate import GenerateStage
from diffgen.stages.write import WriteStage

__all__ = ["GenerateStage", "Stage", "WriteStage", "check_chain"]
