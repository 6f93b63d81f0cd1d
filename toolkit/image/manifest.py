"""The manifest written beside every build: what went in, what came out, how long it took.

It is the record other parts trust (publish reads artifact hashes, reimage reads the build id), so
it is a typed model with a schema number, read back strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toolkit.core.errors import StoreError
from toolkit.core.fsutil import atomic_write

SCHEMA = 1
# A Secure Boot build's extra artifacts (toolkit.bake.collect makes them, boot scripts name the image):
UKI = "uki.efi"  # the signed Unified Kernel Image a secure_boot host chains
UKI_CERT = "uki.crt"  # the db certificate that verifies it: sbverify --cert uki.crt uki.efi


class Artifact(BaseModel):
    """A stored file's SHA-256 and size."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class CheckResult(BaseModel):
    """A check's result as the manifest records it."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: bool
    detail: str = ""


class Manifest(BaseModel):
    """What a build is: its spec, inputs, artifacts, packages, roles, tools and checks."""
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: int = Field(default=SCHEMA, alias="schema")
    image: str
    build_id: str
    created_at: str
    spec: dict[str, Any]
    inputs: dict[str, Any]
    artifacts: dict[str, Artifact]
    packages: dict[str, str]
    roles: dict[str, str]
    tool_versions: dict[str, str]
    dib_env: dict[str, str]
    bake_seconds: float
    checks: dict[str, CheckResult] = Field(default_factory=dict)
    # package -> the archive (suite) its version was installed from, e.g. bookworm-security; empty
    # in manifests older than this field
    package_archives: dict[str, str] = Field(default_factory=dict)
    # builder: packer builds: the build whose root the machine booted, and packer's template
    builder: str = "dib"
    parent_build: str | None = None
    packer_template: dict[str, Any] | None = None

    def to_json(self) -> str:
        """The manifest as stored (sorted keys, indented)."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        """Write the manifest to ``path`` atomically."""
        atomic_write(path, self.to_json())


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path``; StoreError when it is missing or not a manifest."""
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: manifest missing") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StoreError(f"{path}: manifest is invalid at {where}: {first['msg']}") from None
