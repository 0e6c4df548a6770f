"""Static checks of the Slicer module (no Slicer GUI needed): the .py, the .ui and the CMake lists agree."""

from __future__ import annotations

import ast
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MedSegAttention"
MODULE_PY = MODULE_DIR / "MedSegAttention.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedSegAttention.ui"


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ui() -> ET.ElementTree:
    return ET.parse(UI_FILE)


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def _methods(cls: ast.ClassDef) -> set[str]:
    return {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _attributes_of(tree: ast.AST, owner: str) -> set[str]:
    """Names X in every ``self.<owner>.X`` of the tree."""
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == owner and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            found.add(node.attr)
    return found


def _ui_widgets(ui: ET.ElementTree) -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ui.iter("widget")}


def _parameter_fields(tree: ast.Module) -> set[str]:
    cls = _class(tree, "MedSegAttentionParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_template_structure(tree: ast.Module) -> None:
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in cls.bases] for name, cls in classes.items()}
    assert "ScriptedLoadableModule" in bases["MedSegAttention"]
    assert "ScriptedLoadableModuleWidget" in bases["MedSegAttentionWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["MedSegAttentionLogic"]
    assert "ScriptedLoadableModuleTest" in bases["MedSegAttentionTest"]
    decorators = [ast.unparse(d) for d in classes["MedSegAttentionParameterNode"].decorator_list]
    assert decorators == ["parameterNodeWrapper"]
    assert "'Segmentation'" in ast.unparse(classes["MedSegAttention"])
    assert {"setup", "cleanup", "enter", "exit", "onApplyButton", "onReload"} <= _methods(classes["MedSegAttentionWidget"])


def test_ui_parses_and_is_a_qmrml_widget(ui: ET.ElementTree) -> None:
    root = ui.getroot()
    assert root.tag == "ui" and root.find("widget").get("class") == "qMRMLWidget"
    widgets = _ui_widgets(ui)
    assert len(widgets) == len(list(ui.iter("widget"))), "duplicate objectName in the .ui"
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    used = {cls for cls in widgets.values() if not cls.startswith("Q")}
    assert used <= custom, f"custom widgets without a <customwidget> entry: {used - custom}"


def _gui_sections() -> dict[str, ast.Module]:
    """The panel's Qt sections (MedSegAttentionGui), which bind ``self.ui`` and call ``self.logic`` too."""
    return {p.name: ast.parse(p.read_text(encoding="utf-8")) for p in sorted((MODULE_DIR / "MedSegAttentionGui").glob("*.py"))}


def test_every_ui_name_used_exists(tree: ast.Module, ui: ET.ElementTree) -> None:
    used = _attributes_of(tree, "ui")
    assert used, "the widget uses no self.ui names?"
    sections = _gui_sections()
    assert {"models_section.py", "levels_section.py"} <= set(sections)
    for name, section in sections.items():
        used |= _attributes_of(section, "ui")
    assert {"modelsListWidget", "levelInfoLabel"} <= used  # the sections' names are checked as well
    missing = used - set(_ui_widgets(ui))
    assert not missing, f"self.ui.<name> not in MedSegAttention.ui: {sorted(missing)}"


def test_every_logic_method_used_exists(tree: ast.Module) -> None:
    """The widget's and its sections' self.logic.<method> exist on the module's logic or on the Qt-free
    PanelLogic it extends."""
    panel = ast.parse((REPO / "MedSegAttention" / "MedSegAttentionLib" / "slicer_support" / "panel_logic.py").read_text())
    used = _attributes_of(_class(tree, "MedSegAttentionWidget"), "logic")
    for section in _gui_sections().values():
        used |= _attributes_of(section, "logic")
    assert "startInstallWeights" in used
    available = _methods(_class(tree, "MedSegAttentionLogic")) | _methods(_class(panel, "PanelLogic"))
    assert used and not used - available, f"self.logic.<method> missing on the Logic: {sorted(used - available)}"


def test_module_file_stays_a_thin_binding() -> None:
    """The module file and each Qt section stay small; the work is in the Qt-free library."""
    files = [MODULE_PY, *sorted((MODULE_DIR / "MedSegAttentionGui").glob("*.py"))]
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in files}
    assert all(n < 400 for n in sizes.values()), sizes


def test_widget_slots_exist(tree: ast.Module) -> None:
    widget = _class(tree, "MedSegAttentionWidget")
    referenced = {node.attr for node in ast.walk(widget) if isinstance(node, ast.Attribute)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"
                  and (node.attr.startswith("on") or node.attr.startswith("_on"))}
    assert not referenced - _methods(widget), f"handlers referenced but not defined: {referenced - _methods(widget)}"


def test_parameter_binding(tree: ast.Module, ui: ET.ElementTree) -> None:
    fields = _parameter_fields(tree)
    assert fields == {"inputVolume", "outputSegmentation", "modelId", "pruningLevel", "device", "show3D", "testTimeMirroring", "computeMaps", "mapOpacity",
                      "mapThreshold", "selectedMap"}
    bound = {}
    for widget in ui.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget.get("class")
    assert set(bound) <= fields, f"SlicerParameterName without a parameter: {set(bound) - fields}"
    assert bound == {"inputVolume": "qMRMLNodeComboBox", "outputSegmentation": "qMRMLNodeComboBox", "pruningLevel": "QComboBox", "device": "QComboBox",
                     "show3D": "QCheckBox", "testTimeMirroring": "QCheckBox", "computeMaps": "QCheckBox", "mapOpacity": "ctkSliderWidget", "mapThreshold": "ctkSliderWidget"}
    widget_cls = _class(tree, "MedSegAttentionWidget")
    used = {node.attr for node in ast.walk(widget_cls) if isinstance(node, ast.Attribute)
            and ast.unparse(node.value) in ("self._parameterNode", "p")}
    assert used <= fields | {"connectGui", "disconnectGui"}, f"unknown parameters used: {used - fields}"


def test_no_imp_module_and_importlib_reload(tree: ast.Module) -> None:
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "imp" not in imported and "importlib" in imported
    assert "importlib.reload" in MODULE_PY.read_text()


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found"
    return [item.replace("${MODULE_NAME}", "MedSegAttention") for item in match.group(1).split()]


def test_module_cmake_lists_exactly_the_tree() -> None:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text
    scripts, resources = _cmake_list(text, "MODULE_PYTHON_SCRIPTS"), _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    on_disk = {str(p.relative_to(MODULE_DIR)).replace("\\", "/") for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and p.name != "CMakeLists.txt"}
    py_on_disk = {f for f in on_disk if f.endswith(".py")}
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources)), "duplicates in CMake lists"
    assert set(scripts) == py_on_disk, (
        f"MedSegAttention/CMakeLists.txt MODULE_PYTHON_SCRIPTS: add {sorted(py_on_disk - set(scripts))}, "
        f"remove {sorted(set(scripts) - py_on_disk)}")
    assert set(resources) == on_disk - py_on_disk, (
        f"MODULE_PYTHON_RESOURCES: add {sorted(on_disk - py_on_disk - set(resources))}, "
        f"remove {sorted(set(resources) - (on_disk - py_on_disk))}")


def test_extension_cmake_metadata() -> None:
    text = (REPO / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({key} "[^"]+"\)', text), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(MedSegAttention)" in text
    assert 'set(EXTENSION_MINIMUM_SLICER_VERSION "5.10")' in text and "5.10" in re.search(
        r'set\(EXTENSION_DESCRIPTION "([^"]+)"\)', text).group(1)


def test_extension_index_entry_license_and_help_say_what_ships() -> None:
    """Extensions Index readiness: catalog entry (PyTorch as build dependency), licence, honest help text."""
    import json

    entry = json.loads((REPO / "Resources" / "ExtensionsIndex" / "MedSegAttention.json").read_text())
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] == "Segmentation"
    assert entry["scm_url"].startswith("https://") and entry["scm_revision"]
    assert "Apache License" in (REPO / "LICENSE.txt").read_text()
    module = (MODULE_DIR / "MedSegAttentionGui" / "texts.py").read_text()
    assert "texts.helpText()" in MODULE_PY.read_text() and "texts.acknowledgementText()" in MODULE_PY.read_text()
    for phrase in ("left-atrium model", "5.10 or later", "research use only", "User guide"):
        assert phrase in module.lower() or phrase in module, phrase
    for citation in ("arXiv:2010.04920", "doi:10.1109/TMI.2020.3034995", "doi:10.1016/j.cag.2020.05.003",
                     "doi:10.3389/fbioe.2020.605132", "arXiv:1709.04518"):
        assert citation in module, citation


RAW_URL = re.compile(r"https://raw\.githubusercontent\.com/[^/\s\"]+/[^/\s\"]+/main/([^\s\"]+)")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_extension_icon_and_screenshots_exist_in_the_top_level_resources() -> None:
    text = (REPO / "CMakeLists.txt").read_text()
    icon = RAW_URL.findall(re.search(r'set\(EXTENSION_ICONURL "([^"]+)"\)', text).group(1))
    shots = RAW_URL.findall(re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', text).group(1))
    assert icon == ["Resources/Icons/MedSegAttention.png"] and shots, "icon and screenshots live in Resources/"
    assert _png_size(REPO / icon[0]) == (128, 128)
    for shot in shots:
        path = REPO / shot
        assert path.is_file(), f"EXTENSION_SCREENSHOTURLS names {shot}, which is not in the repository"
        width, height = _png_size(path)
        assert width >= 600 and height >= 400 and path.stat().st_size < 300 * 1024, (shot, width, height)
        assert shot in (REPO / "README.md").read_text(), f"README does not show {shot}"


def test_requirements_leave_slicer_packages_alone() -> None:
    lines = [line.split("#")[0].strip() for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~\[ ]", line)[0].lower() for line in lines if line}
    assert names == {"monai", "safetensors", "tqdm", "jsonschema", "pyyaml", "openvino"}
    assert all(">=" in line for line in lines if line), "use version floors, not pins"


def test_icon_is_a_real_png() -> None:
    assert _png_size(MODULE_DIR / "Resources" / "Icons" / "MedSegAttention.png") == (128, 128)
