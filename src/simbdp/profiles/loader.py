"""Load the platform config and tenant profiles from YAML or JSON, with clear errors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from simbdp.errors import ConfigError
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = [
    "Platform",
    "check_profiles",
    "load_platform",
    "load_profile",
    "save_profile",
]

M = TypeVar("M", bound=BaseModel)
PROFILE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Platform:
    """The platform config and every tenant profile, read once and passed down.

    ``broken`` holds the tenants whose profile file did not load (tenant id, the file's
    stem -> why): they are disabled, nothing of theirs runs, their staging folder is left
    alone until the file is fixed; the other tenants run.
    """

    config: PlatformConfig
    tenants: dict[str, TenantProfile] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    def tenant(self, tenant_id: str) -> TenantProfile:
        try:
            return self.tenants[tenant_id]
        except KeyError:
            if tenant_id in self.broken:
                raise ConfigError(f"tenant {tenant_id!r} is disabled: its profile did not "
                                  f"load: {self.broken[tenant_id]}") from None
            raise ConfigError(f"unknown tenant {tenant_id!r}: add it with `simbdp tenants add "
                              f"PROFILE.yaml`; `simbdp tenants list` shows the tenants") from None


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}", [(str(path), "", str(e))]) from e
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {e}",
                          [(str(path), "", f"syntax: {e}")]) from e


def _validate(model: type[M], data: Any, path: Path, **extra: Any) -> M:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level",
                          [(str(path), "", "expected a mapping at the top level")])
    try:
        return model.model_validate({**data, **extra})
    except ValidationError as e:
        problems = [
            (str(path), ".".join(str(p) for p in err["loc"]) or "(top)", err["msg"])
            for err in e.errors()
        ]
        lines = "\n".join(f"  {f}: {loc}: {msg}" for f, loc, msg in problems)
        raise ConfigError(f"{path}: {len(problems)} error(s)\n{lines}", problems) from e


def load_profile(path: Path) -> TenantProfile:
    """Read and validate one tenant profile; raise ConfigError listing every problem."""
    profile = _validate(TenantProfile, _read(path), path)
    if path.stem != profile.tenant_id:
        raise ConfigError(
            f"{path}: tenant_id {profile.tenant_id!r} does not match the file name",
            [(str(path), "tenant_id", "must match the file name")],
        )
    return profile


def save_profile(config: PlatformConfig, profile: TenantProfile) -> Path:
    """Write a tenant's profile to ``home/tenants/<tenant>.yaml`` (0600), atomically."""
    config.tenants_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = config.tenants_dir / f"{profile.tenant_id}.yaml"
    data = profile.model_dump(mode="json", exclude_defaults=True, exclude={"namespace"})
    if profile.namespace != profile.tenant_id:
        data["namespace"] = profile.namespace
    tmp = path.with_suffix(".yaml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path


def _profile_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in PROFILE_SUFFIXES and p.is_file())


def check_profiles(path: Path) -> tuple[list[TenantProfile], list[tuple[str, str, str]]]:
    """Validate a profile file or a folder of them; return the good ones and every problem."""
    good: list[TenantProfile] = []
    problems: list[tuple[str, str, str]] = []
    for p in _profile_files(path):
        try:
            good.append(load_profile(p))
        except ConfigError as e:
            problems.extend(e.problems or [(str(p), "", str(e))])
    return good, problems


def _reason(problems: list[tuple[str, str, str]]) -> str:
    return "; ".join(" ".join(f"{f}: {loc or '(file)'}: {msg}".split())
                     for f, loc, msg in problems)


def _load_tenants(config: PlatformConfig) -> tuple[dict[str, TenantProfile], dict[str, str]]:
    """Every profile under ``tenants/``: the good ones, and why each other one is broken."""
    tenants: dict[str, TenantProfile] = {}
    broken: dict[str, str] = {}
    for path in _profile_files(config.tenants_dir) if config.tenants_dir.exists() else []:
        tid = path.stem
        if tid in tenants or tid in broken:
            tenants.pop(tid, None)
            broken[tid] = f"{path}: another profile file names the same tenant"
            continue
        try:
            profile = load_profile(path)
        except ConfigError as e:
            broken[tid] = _reason(e.problems or [(str(path), "", str(e))])
            continue
        unknown = [(str(path), f"tables.{t.name}.sinks", f"unknown sink {s!r}")
                   for t in profile.tables for s in t.sinks if s not in config.sinks]
        if unknown:
            broken[tid] = _reason(unknown)
        else:
            tenants[tid] = profile
    return tenants, broken


def load_platform(home: Path) -> Platform:
    """Load ``home/platform.yaml`` (optional) and every profile under ``home/tenants``.

    Raises ConfigError listing every problem of ``platform.yaml``. A tenant profile that does
    not load (syntax, schema, unknown sink) only disables that tenant: it is listed in
    ``Platform.broken`` with its problems, and the other tenants load.
    """
    home = home.resolve()
    cfg_path = next((home / f"platform{s}" for s in PROFILE_SUFFIXES
                     if (home / f"platform{s}").exists()), None)
    data = _read(cfg_path) if cfg_path else {}
    config = _validate(PlatformConfig, data or {}, cfg_path or home, home=home)
    tenants, broken = _load_tenants(config)
    return Platform(config=config, tenants=tenants, broken=broken)
