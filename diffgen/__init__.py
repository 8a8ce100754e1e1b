"""diffgen: the engine as a library (model loading, sampling, encoding, storage).

Imports `schemas`, never `ray`: everything here runs and tests without a cluster.
"""

__version__ = "0.1.0"
