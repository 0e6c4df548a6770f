"""The repository itself: README's commands are what CI runs, documents name real paths, no pickles."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    return [block.strip() for block in blocks[:2]]  # set-up (+ main job), then tests


def test_ci_runs_the_readme_commands_verbatim() -> None:
    setup, tests = _readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert setup in ci_lines, f"README's set-up command is not in .ci/run: {setup}"
    assert tests in ci_lines, f"README's test command is not in .ci/run: {tests}"
    assert ci_lines.index(setup) < ci_lines.index(tests)


def test_paths_named_in_the_architecture_page_exist() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    lib = ROOT / "MedSegAttention" / "MedSegAttentionLib"
    missing = []
    for name in set(re.findall(r"`([\w./-]+\.(?:py|md|json|ui))`", text)):
        if "*" in name or "<" in name:
            continue
        candidates = [ROOT / name, lib / name, ROOT / "MedSegAttention" / name, ROOT / "training" / name,
                      *(lib / room / name for room in ("scene", "models", "modelstore", "inference", "slicer_support"))]
        if not any(p.exists() for p in candidates):
            missing.append(name)
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {sorted(missing)}"


def test_no_code_unpickles_files() -> None:
    """torch.load only with weights_only=True; no pickle.load anywhere in shipped or test code."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
            if ("torch.load(" in line and "weights_only=True" not in line) or re.search(r"\bpickle\.loads?\(", line):
                offenders.append(f"{name}:{number}")
    assert not offenders, offenders


def test_every_input_check_in_the_docs_exists_in_the_code() -> None:
    """docs/result-format.md's input-check table and the library's messages stay in step."""
    text = (ROOT / "docs" / "result-format.md").read_text(encoding="utf-8")
    table = text[text.index("## Input checks"):]
    fragments = [f for row in table.splitlines() if row.startswith("| ") and not row.startswith("| input")
                 for f in re.findall(r"`([^`]+)`", row.split(" | ")[-1])]
    assert len(fragments) >= 20
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "MedSegAttention" / "MedSegAttentionLib").rglob("*.py"))
    missing = [f for f in fragments if f not in source]
    assert not missing, f"messages documented but not in the code: {missing}"


def test_no_test_code_in_the_runtime_packages() -> None:
    """Scenarios and phantoms live under Testing/ (Slicer's MedSegAttention/Testing/Python convention)."""
    lib = ROOT / "MedSegAttention" / "MedSegAttentionLib"
    for package in (lib, ROOT / "training"):
        for path in package.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "import pytest" not in text and "phantom" not in path.name and "scenario" not in path.name, path
    roots = {p.relative_to(lib).parts[0] for p in lib.glob("*") if p.name != "__pycache__"}
    assert roots == {"__init__.py", "choices.py", "cli.py", "errors.py", "protocol.py", "models", "modelstore", "inference", "scene",
                     "slicer_support"}


def test_cards_cite_public_sources_and_hold_no_machine_paths() -> None:
    import json

    catalog = ROOT / "MedSegAttention" / "MedSegAttentionLib" / "modelstore" / "catalog"
    for path in catalog.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        paper = json.loads(text)["paper"]
        assert paper.get("doi") or paper.get("arxiv"), f"{path.name}: cite the paper by DOI or arXiv id"
        assert "shared/" not in paper["venue"] and "see " not in paper["venue"], path.name
        assert not re.search(r'"(/|[A-Za-z]:\\\\)[^"]*"', text), f"{path.name} holds an absolute path"


def _project_sources() -> list[Path]:
    folders = ("MedSegAttention", "training", "Testing", "benchmarks")
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_small_files_and_functions() -> None:
    """No source file over 400 lines and no function over 80: one job per module, readable functions."""
    import ast

    sources = _project_sources()
    assert len(sources) > 100
    long_files = {str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long_files, long_files
    long_functions = [
        f"{p.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for p in sources for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long_functions, long_functions
