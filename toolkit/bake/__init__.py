"""Baking images: plan (pure) -> DIB with our elements and bake-time roles -> the store."""

from toolkit.bake.build import BakeResult, BakeStepError, bake_image

__all__ = ["BakeResult", "BakeStepError", "bake_image"]
