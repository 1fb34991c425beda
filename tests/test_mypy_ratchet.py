"""The mypy exemption list may only shrink (scripts/mypy_ratchet.py, run by ``make lint``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mypy_ratchet.py"


@pytest.fixture(scope="module")
def ratchet():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("mypy_ratchet", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_exemptions_equal_the_baseline(ratchet) -> None:  # type: ignore[no-untyped-def]
    exempt = ratchet.exempt_patterns()
    assert exempt, "pyproject.toml has no [[tool.mypy.overrides]] with ignore_errors"
    assert ratchet.check(exempt, ratchet.baseline_patterns(), ratchet.package_modules()) == []
    for core in ("napari_sgnet.errors", "napari_sgnet.geometry", "napari_sgnet.palette",
                 "napari_sgnet.metrics", "napari_sgnet.config"):  # fmt: skip
        assert not ratchet.is_exempt(core, exempt), f"{core} must stay strictly checked"


def test_a_newly_exempt_module_fails(ratchet) -> None:  # type: ignore[no-untyped-def]
    modules = {"pkg": 10, "pkg.a": 50, "pkg.b": 40, "pkg.sub": 0, "pkg.sub.c": 100}
    baseline = ["pkg.a", "pkg.sub.*"]
    assert ratchet.check(baseline, baseline, modules) == []
    (problem,) = ratchet.check([*baseline, "pkg.b"], baseline, modules)
    assert problem.startswith("pkg.b: newly exempt")
    (problem,) = ratchet.check(["pkg.sub.*"], baseline, modules)  # shrunk: update the baseline
    assert problem.startswith("pkg.a: no longer exempt")
    (problem,) = ratchet.check([*baseline, "pkg.gone"], [*baseline, "pkg.gone"], modules)
    assert problem.startswith("pkg.gone: exempt but no such module")


def test_checked_share(ratchet) -> None:  # type: ignore[no-untyped-def]
    modules = {"pkg": 10, "pkg.a": 50, "pkg.b": 40, "pkg.sub": 0, "pkg.sub.c": 100}
    assert ratchet.is_exempt("pkg.sub", ["pkg.sub.*"]) and not ratchet.is_exempt(
        "pkg.subx", ["pkg.sub.*"]
    )
    assert ratchet.checked_share(["pkg.a", "pkg.sub.*"], modules) == (50, 200)
    assert ratchet.checked_share([], modules) == (200, 200)
