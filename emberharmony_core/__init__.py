"""emberharmony_core: pure compute and I/O for the emberharmony feature pipeline.

Never imports dagster. Every function here can be called and tested on its own.
"""

__version__ = "0.1.0"
