"""The lock files pin every package with hashes, and this environment was installed from them."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?: *;[^\\]*)? *\\$")


def pins(name: str) -> dict[str, str]:
    """{package: version} of a lock file; every requirement in it must be `==` with hashes."""
    lines = (REPO / name).read_text(encoding="utf-8").splitlines()
    found: dict[str, str] = {}
    for number, line in enumerate(lines):
        if not line or line.startswith((" ", "#")):
            continue
        match = _PIN.match(line)
        assert match, f"{name}:{number + 1} is not an exact pin: {line}"
        assert lines[number + 1].strip().startswith("--hash=sha256:"), f"{name}: {line} unhashed"
        found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_service_lock_is_the_development_lock_s_versions() -> None:
    """requirements.txt (the platform's build) pins a subset of requirements-dev.txt, at the same
    versions, and holds no test or lint tool."""
    service, development = pins("requirements.txt"), pins("requirements-dev.txt")
    assert {"asyncpg", "pydantic", "starlette", "uvicorn"} <= set(service)
    assert {name: development.get(name) for name in service} == service
    assert not {"pytest", "mypy", "ruff", "hypothesis", "uv"} & set(service)


def test_every_locked_package_is_installed_at_its_version() -> None:
    """Every package the lock names for this platform is installed at exactly that version."""
    wrong = {}
    for name, version in pins("requirements-dev.txt").items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a package for another platform (its marker excludes this one)
        if installed != version:
            wrong[name] = (installed, version)
    assert wrong == {}
