"""openkontext: a self-hosted, open implementation of FLUX.1 Kontext image editing."""

__version__ = "0.1.0"
