"""mypy ratchet: the list of modules exempt from strict checking may only shrink.

The exempt modules are the ``[[tool.mypy.overrides]]`` entries of pyproject.toml with
``ignore_errors = true``. They must equal the committed baseline ``.mypy-exempt.txt``:

- a module exempt in pyproject.toml but not in the baseline fails the check (the list grew);
- a module in the baseline but no longer exempt also fails, with a request to delete it from
  the baseline too (so that the shrunk list cannot grow back to the old one).

Also prints the share of the package's lines that mypy checks (lines of non-exempt modules).

    python scripts/mypy_ratchet.py            # check, print the share
    python scripts/mypy_ratchet.py --share    # print the share only
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "napari_sgnet"
BASELINE = ROOT / ".mypy-exempt.txt"


def exempt_patterns(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Module patterns with ``ignore_errors = true`` in ``[[tool.mypy.overrides]]``."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    overrides = config.get("tool", {}).get("mypy", {}).get("overrides", [])
    patterns: list[str] = []
    for override in overrides:
        if override.get("ignore_errors"):
            module = override.get("module", [])
            patterns += [module] if isinstance(module, str) else list(module)
    return patterns


def baseline_patterns(path: Path = BASELINE) -> list[str]:
    """The committed baseline: one module pattern a line; ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def package_modules(root: Path = ROOT) -> dict[str, int]:
    """Every module of the package with its number of lines."""
    modules: dict[str, int] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = len(path.read_text(encoding="utf-8").splitlines())
    return modules


def is_exempt(module: str, patterns: list[str]) -> bool:
    """Whether ``module`` matches a pattern the way mypy's ``module = "a.b.*"`` does."""
    for pattern in patterns:
        if pattern.endswith(".*"):
            if module == pattern[:-2] or module.startswith(pattern[:-1]):
                return True
        elif fnmatch.fnmatchcase(module, pattern):
            return True
    return False


def checked_share(patterns: list[str], modules: dict[str, int]) -> tuple[int, int]:
    """(lines mypy checks strictly, lines in the package)."""
    total = sum(modules.values())
    checked = sum(n for m, n in modules.items() if not is_exempt(m, patterns))
    return checked, total


def check(exempt: list[str], baseline: list[str], modules: dict[str, int]) -> list[str]:
    """Problems with the exemption list (empty when the ratchet holds)."""
    problems = []
    added = sorted(set(exempt) - set(baseline))
    removed = sorted(set(baseline) - set(exempt))
    for pattern in added:
        problems.append(
            f"{pattern}: newly exempt from mypy; fix its type errors instead "
            f"(the exemption list may only shrink)"
        )
    for pattern in removed:
        problems.append(f"{pattern}: no longer exempt, well done; delete it from {BASELINE.name}")
    for pattern in exempt:
        if not any(is_exempt(m, [pattern]) for m in modules):
            problems.append(f"{pattern}: exempt but no such module; delete it from both lists")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", action="store_true", help="print the checked share only")
    args = parser.parse_args(argv)
    exempt = exempt_patterns()
    modules = package_modules()
    checked, total = checked_share(exempt, modules)
    n_checked = sum(not is_exempt(m, exempt) for m in modules)
    print(  # noqa: T201
        f"mypy --strict checks {checked}/{total} lines ({100 * checked / total:.1f}%) of "
        f"{PACKAGE}: {n_checked}/{len(modules)} modules"
    )
    if args.share:
        return 0
    problems = check(exempt, baseline_patterns(), modules)
    for problem in problems:
        print(f"mypy ratchet: {problem}", file=sys.stderr)  # noqa: T201
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
