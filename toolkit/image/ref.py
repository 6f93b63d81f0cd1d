"""Image references: ``<name>@<channel>`` or ``<name>@<build-id>``, the one parser for both.

Names are what image specs may be called; build ids and channels are plain tokens, so a
reference can reach a path, a URL or a command line without further escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.core.errors import InputError

# The one home of these two patterns (tests/unit/test_facts.py finds any other copy): compose them.
IMAGE_NAME = r"[a-z][a-z0-9_-]{0,62}"  # an image spec's name; channel names follow it too
BUILD_REF = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # a build id or a channel, as a reference names it
IMAGE_NAME_RE = re.compile(rf"^{IMAGE_NAME}$")
REF_RE = re.compile(rf"^{BUILD_REF}$")


class ImageRefError(InputError):
    """A value is not an image reference."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed ``name@channel`` or ``name@build-id``."""
    image: str
    ref: str  # a channel name or a build id

    def __str__(self) -> str:
        return f"{self.image}@{self.ref}"


def parse_image_ref(value: str, what: str = "image") -> ImageRef:
    """``name@channel`` / ``name@build-id``; ImageRefError (naming ``what``) for anything else."""
    if not isinstance(value, str):
        raise ImageRefError(f"{what} must be a string like base@dev, got {type(value).__name__}")
    image, sep, ref = value.partition("@")
    if not sep or not IMAGE_NAME_RE.match(image) or not REF_RE.match(ref):
        raise ImageRefError(f"{what} must look like <name>@<channel> or <name>@<build-id>, got {value[:80]!r}",
                            hint="e.g. web@prod or web@20261126-0a1b2c3d")
    return ImageRef(image, ref)
