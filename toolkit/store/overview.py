"""The images overview: every image with its builds (age, size, checks) and the channels pointing at them."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.state.db import StateDB
from toolkit.store.artifacts import Store
from toolkit.store.channels import unpassed_checks


@dataclass(frozen=True)
class BuildSummary:
    """A stored build as ``golden images`` lists it."""
    build_id: str
    created_at: str
    size: int
    checks_passed: bool
    channels: tuple[str, ...]


@dataclass(frozen=True)
class ImageSummary:
    """An image with its channels and builds."""
    image: str
    channels: dict[str, str]
    builds: tuple[BuildSummary, ...]


def summarize_images(db: StateDB, store: Store) -> list[ImageSummary]:
    """Every stored image with its channels and builds."""
    with db.read() as repo:
        rows = repo.list_channels()
    by_image: dict[str, dict[str, str]] = {}
    for r in rows:
        by_image.setdefault(r.image, {})[r.channel] = r.build_id
    out = []
    for image in sorted(set(store.images()) | set(by_image)):
        chans = by_image.get(image, {})
        builds = tuple(
            BuildSummary(
                b.build_id, b.manifest.created_at, sum(a.size for a in b.manifest.artifacts.values()),
                not unpassed_checks(b), tuple(sorted(c for c, bid in chans.items() if bid == b.build_id)),
            )
            for b in store.builds(image)
        )
        out.append(ImageSummary(image, dict(sorted(chans.items())), builds))
    return out
