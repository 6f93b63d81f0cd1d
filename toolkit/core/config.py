"""Where things live: the project (specs, roles), the state home (store, runs, fleet DB), caches.

Resolution order for every path: explicit argument, then environment variable, then the
project's ``golden.yaml``, then the default. Nothing here touches the disk except reading
``golden.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from toolkit.core.duration import parse_duration
from toolkit.core.errors import InputError
from toolkit.core.yamlfile import load_yaml_file

CONFIG_FILE = "golden.yaml"


def _find_project(start: Path) -> Path | None:
    for candidate in (start, *start.parents):
        if (candidate / "images").is_dir() and (candidate / "roles").is_dir():
            return candidate
    return None


def _default_home() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/golden")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "golden"


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "golden"


@dataclass(frozen=True)
class Settings:
    """Where golden works: the project (specs, roles), the home (store, state, runs), the cache, golden.yaml."""
    project: Path
    home: Path
    cache: Path
    mirror: str | None = None
    security_mirror: str | None = None
    inventory: Path | None = None
    state_url: str | None = None  # postgresql://... for shared fleet state; None: SQLite under home
    # The image store: <home>/store unless set; boot-server replicas and controllers on several hosts
    # point it at one shared mount (builds are immutable, so sharing needs no coordination).
    store: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    has_project: bool = True  # False: no folder with images/ and roles/ was found (project is then the cwd)

    def require_project(self) -> Path:
        if not self.has_project:
            raise InputError("no golden project found (a folder with images/ and roles/)",
                             hint="run golden from the project folder, pass --project DIR or set GOLDEN_PROJECT")
        return self.project

    @property
    def images_dir(self) -> Path:
        """The project's image specs; InputError outside a project."""
        return self.require_project() / "images"

    @property
    def roles_dir(self) -> Path:
        """The project's Ansible roles; InputError outside a project."""
        return self.require_project() / "roles"

    @property
    def store_dir(self) -> Path:
        """The build store: ``store:`` from golden.yaml, else ``<home>/store``."""
        return self.store if self.store is not None else self.home / "store"

    @property
    def runs_dir(self) -> Path:
        """Where bake and nightly run records are kept."""
        return self.home / "runs"

    @property
    def state_db(self) -> Path:
        """The SQLite state database file (when no ``state_url`` is set)."""
        return self.home / "state.db"

    @property
    def locks_dir(self) -> Path:
        """Where the home's lock files are kept."""
        return self.home / "locks"

    def with_(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabConfig(_Strict):
    """golden.yaml's ``lab:`` section."""
    boot_url: str | None = None


class StaleConfig(_Strict):
    """``stale:`` in golden.yaml: when a host's running build is too old or too far behind its channel."""

    max_age: str | None = None  # e.g. 14d: the running build's age (since it was baked)
    max_behind: int | None = Field(default=None, ge=0, le=10_000)  # builds the channel moved on since
    max_packages_behind: int | None = Field(default=None, ge=0, le=1_000_000)
    max_security_behind: int | None = Field(default=None, ge=0, le=1_000_000)

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value, "max_age", hi=10 * 366 * 86400.0)
            except InputError as exc:
                raise ValueError(exc.message) from None
        return value

    @property
    def max_age_s(self) -> float | None:
        """``max_age`` in seconds, or None when unset."""
        return parse_duration(self.max_age, "max_age", hi=10 * 366 * 86400.0) if self.max_age else None


class PackerConfig(_Strict):
    """``packer:`` in golden.yaml: how ``builder: packer`` bakes run (GOLDEN_PACKER_* override)."""

    executable: str | None = None  # default: packer on PATH (Debian: /usr/bin/packer)
    accelerator: str | None = Field(default=None, pattern=r"^[a-z]{1,16}$")  # tcg (default) or kvm
    ssh_timeout: str | None = None  # e.g. 10m: how long the machine may take to reach SSH
    memory_mb: int | None = Field(default=None, ge=256, le=65536)
    cpus: int | None = Field(default=None, ge=1, le=64)


def validate_config(data: dict[str, Any], path: Path, text: str | None = None) -> dict[str, Any]:
    """The mapping itself when it is a valid ``golden.yaml``; InputError listing every problem with its line
    (the keys and their schemas: toolkit.core.configschema)."""
    from toolkit.core.configschema import SECTIONS, check_config

    problems = check_config(data, text if text is not None else path.read_text(errors="replace"), path.name)
    if problems:
        raise InputError("; ".join(problems), hint=f"the keys golden.yaml may hold: {', '.join(SECTIONS)}")
    return data


def load_settings(project: Path | None = None, home: Path | None = None) -> Settings:
    """Settings from the arguments, GOLDEN_* variables and golden.yaml, in that order of precedence."""
    env = os.environ
    proj = project or (Path(env["GOLDEN_PROJECT"]) if env.get("GOLDEN_PROJECT") else None)
    if proj is not None and not proj.is_dir():
        raise InputError(f"project folder {proj} does not exist" if not proj.exists() else
                         f"project {proj} is not a folder", hint="pass --project (or GOLDEN_PROJECT) a project folder")
    if proj is None:
        # the current folder and its parents only: never golden's own install folder, or a verb that
        # writes into the project (role new) would write into golden's source tree
        proj = _find_project(Path.cwd())
    found = proj is not None
    # Verbs that need no specs or roles (serve, pxe render, power, fleet, ...) work from any folder.
    proj = proj if proj is not None else Path.cwd()
    data: dict[str, Any] = {}
    cfg = proj / CONFIG_FILE
    if cfg.exists():
        loaded = load_yaml_file(cfg) or {}
        if not isinstance(loaded, dict):
            raise InputError(f"{cfg}: expected a mapping at the top level")
        data = validate_config(loaded, cfg)

    def pick(env_name: str, key: str) -> str | None:
        value = env.get(env_name) or data.get(key)
        return str(value) if value else None

    home_s = str(home) if home else pick("GOLDEN_HOME", "home")
    cache_s = pick("GOLDEN_CACHE", "cache")
    inv = pick("GOLDEN_INVENTORY", "inventory")
    store_s = pick("GOLDEN_STORE", "store")
    return Settings(
        project=proj.resolve(),
        has_project=found,
        home=Path(home_s) if home_s else _default_home(),
        cache=Path(cache_s) if cache_s else _default_cache(),
        mirror=pick("GOLDEN_MIRROR", "mirror"),
        security_mirror=pick("GOLDEN_SECURITY_MIRROR", "security_mirror"),
        # "lab" names the lab's inventory (toolkit.inventory.selection), not a file in the project
        inventory=(Path(inv) if inv == "lab" or Path(inv).is_absolute() else proj / inv) if inv else None,
        state_url=pick("GOLDEN_STATE_URL", "state_url"),
        store=(proj / store_s if not Path(store_s).is_absolute() else Path(store_s)) if store_s else None,
        extra={k: v for k, v in data.items()
               if k not in {"home", "cache", "mirror", "security_mirror", "inventory", "state_url", "store"}},
    )
