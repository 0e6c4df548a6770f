"""Which Python packages the Slicer module still needs, and how to install them without harm.

No Qt and no Slicer here: the module's logic asks :func:`missing_requirements`, shows one
confirmation for the whole list (:func:`install_summary`), installs torch through the PyTorch
extension and the rest from ``Resources/requirements.txt`` under :func:`write_constraints_file`,
which pins Slicer's own NumPy, SimpleITK and VTK (and an installed torch) to the versions present,
so an install can never replace them (SlicerTotalSegmentator #4 is what happens otherwise).
"""

from __future__ import annotations

import os
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

TORCH_REQUIREMENT = ">=2.2"  # the floor passed to PyTorchUtils.installTorch
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk", "torch")  # never replaced by our installs
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def read_requirements(path: str | os.PathLike[str]) -> list[str]:
    """Requirement lines of a requirements file (comments, blanks and pip options dropped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#")[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def requirement_name(line: str) -> str:
    """The distribution name of a requirement line (``monai[all]>=1.3`` -> ``monai``)."""
    match = _NAME.match(line)
    if not match:
        raise ValueError(f"not a requirement: {line!r}")
    return match.group(1)


def is_satisfied(line: str) -> bool:
    """Whether the installed distribution fits the requirement (name and version specifier)."""
    from packaging.requirements import Requirement  # shipped with Slicer's Python and with pip setups

    requirement = Requirement(line)
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(version, prereleases=True)


def missing_requirements(requirements_file: str | os.PathLike[str], torch_requirement: str = TORCH_REQUIREMENT) -> list[str]:
    """torch (with its floor) and every line of ``requirements_file`` not installed at a fitting version."""
    lines = [f"torch{torch_requirement}", *read_requirements(requirements_file)]
    return [line for line in lines if not is_satisfied(line)]


def split_torch(missing: list[str]) -> tuple[bool, list[str]]:
    """(torch is missing, the other missing lines): torch goes through the PyTorch extension."""
    others = [line for line in missing if requirement_name(line).lower() != "torch"]
    return len(others) != len(missing), others


def protected_pins() -> list[str]:
    """``name==version`` for each protected package that is installed."""
    pins = []
    for name in PROTECTED_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def write_constraints_file(directory: str | os.PathLike[str] | None = None) -> Path:
    """A pip constraints file with :func:`protected_pins` (pass it as ``-c FILE``)."""
    handle, path = tempfile.mkstemp(prefix="MedSegAttention-constraints-", suffix=".txt", dir=directory)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write("\n".join(protected_pins()) + "\n")
    return Path(path)


def install_summary(missing: list[str]) -> str:
    """The text of the single confirmation: what will be installed, and how."""
    needs_torch, others = split_torch(missing)
    parts = []
    if needs_torch:
        parts.append(f"PyTorch (torch{TORCH_REQUIREMENT}) through the PyTorch extension, matched to this computer's GPU driver")
    if others:
        parts.append("from PyPI: " + ", ".join(others))
    kept = ", ".join(name for name in PROTECTED_PACKAGES if name != "torch")
    return (
        "MedSegAttention needs to install " + "; and ".join(parts) + ". "
        f"Slicer's own {kept} are kept as they are. This takes a few minutes and happens once."
    )


def install_missing(
    requirements_file: str | os.PathLike[str],
    confirm: Optional[Callable[[list[str]], bool]],
    install_torch: Callable[[], bool],
    install_packages: Callable[[list[str], Path], None],
    constraints_dir: str | os.PathLike[str] | None = None,
) -> bool:
    """Install what :func:`missing_requirements` lists, after one ``confirm(missing)`` (None: no question).

    torch goes through ``install_torch`` (the PyTorch extension; False: not installed), the rest through
    ``install_packages(lines, constraints_file)`` under :func:`write_constraints_file`. True when nothing
    is missing afterwards; False if the user declined or an install left something missing.
    """
    missing = missing_requirements(requirements_file)
    if not missing:
        return True
    if confirm is not None and not confirm(missing):
        return False
    needs_torch, others = split_torch(missing)
    if needs_torch and not install_torch():
        return False
    if others:
        install_packages(others, write_constraints_file(constraints_dir))
    return not missing_requirements(requirements_file)
