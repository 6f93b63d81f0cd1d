"""golden: immutable bare-metal servers."""

__version__ = "0.1.0"
