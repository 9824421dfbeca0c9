"""openkontext: a self-hosted, open implementation of FLUX.1 Kontext image editing.

`from openkontext import Kontext` gives the user-facing API (loaded lazily, so importing a
submodule such as `openkontext.world` does not pull in the model code).
"""

__version__ = "0.1.0"
__all__ = ["Kontext", "Settings", "__version__"]


def __getattr__(name: str):
    if name in ("Kontext", "Settings"):
        from openkontext import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'openkontext' has no attribute {name!r}")
