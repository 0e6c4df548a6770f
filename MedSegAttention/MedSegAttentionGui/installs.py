"""Installing the module's Python packages inside Slicer: the Slicer side of
:func:`MedSegAttentionLib.slicer_support.dependencies.install_missing` (one confirmation, torch through the
PyTorch extension, the rest with ``slicer.packaging`` on Slicer 5.12+ or ``pip_install`` before)."""

import importlib
from pathlib import Path

import slicer
from slicer.i18n import tr as _

from MedSegAttentionLib.slicer_support import dependencies


def ensureDependencies(requirementsPath: Path, askConfirmation: bool = True) -> bool:
    """True when everything is installed; False if the user declined or an install failed."""
    ask = askConfirmation and not slicer.app.testingEnabled()
    return dependencies.install_missing(requirementsPath, confirmInstall if ask else None, installTorch, installPackages,
                                        slicer.app.temporaryPath)


def confirmInstall(missing: list[str]) -> bool:
    if dependencies.split_torch(missing)[0]:
        pyTorchUtils()  # says what to do before asking, if the PyTorch extension is missing
    return slicer.util.confirmOkCancelDisplay(dependencies.install_summary(missing), detailedText="\n".join(missing))


def installTorch() -> bool:
    logic = pyTorchUtils().PyTorchUtilsLogic()
    return logic.installTorch(askConfirmation=False, torchVersionRequirement=dependencies.TORCH_REQUIREMENT) is not None


def installPackages(lines: list[str], constraints: Path) -> None:
    try:
        packaging = importlib.import_module("slicer.packaging")  # Slicer >= 5.12: progress dialog, restart detection
    except ImportError:
        packaging = None
    if packaging is not None:
        packaging.pip_ensure(lines, constraints=str(constraints), prompt_install=False, requester="MedSegAttention")
    else:
        with slicer.util.WaitCursor():
            slicer.util.pip_install(lines + ["-c", str(constraints)])


def pyTorchUtils():
    try:
        return importlib.import_module("PyTorchUtils")
    except ModuleNotFoundError as exc:
        raise RuntimeError(_("MedSegAttention needs the PyTorch extension: install it from the Extensions Manager.")) from exc
