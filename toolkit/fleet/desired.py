"""Which build a host should run: pure resolution from a rollout override, a channel, or a pin.

A host's desired build is, in order: the build a rollout recorded for it in the state DB, else
its inventory ``image`` (``name@channel`` follows the channel, ``name@build-id`` pins).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.image.ref import ImageRef


@dataclass(frozen=True)
class DesiredBuild:
    """The build a host should run, and where that comes from."""
    image: str
    build_id: str
    source: str  # "channel dev", "pinned", "rollout"


def resolve_desired(ref: ImageRef | None, channel_build: str | None, pinned_exists: bool,
                    override: tuple[str, str] | None) -> DesiredBuild | None:
    """Pure: the desired build from a rollout override, a channel's current build, or a pinned build id."""
    if override is not None:
        return DesiredBuild(override[0], override[1], "rollout")
    if ref is None:
        return None
    if channel_build is not None:
        return DesiredBuild(ref.image, channel_build, f"channel {ref.ref}")
    if pinned_exists:
        return DesiredBuild(ref.image, ref.ref, "pinned")
    return None
