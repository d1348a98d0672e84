"""The `local` provider: the four models on this machine's own GPU, with diffusers.

Installed with the `gpu` extra (`pip install 'imagine[gpu]'`); docs/gpu.md has the
settings and the pipelines it takes. Importing this package imports nothing of torch:
only a worker that runs a local task loads it (engine.py).
"""

from imagine.providers.local.provider import LocalProvider, create

__all__ = ["LocalProvider", "create"]
