"""The project's text stands alone (it never points at design notes kept outside the
repository) and matches the code: every doc is linked from the README and every link resolves,
and every module of the package has its line in the module map of docs/design.md."""
import fnmatch
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "fuxictr_mmctr")
#: Names of notes that live outside the repository (built here so this file does not match).
OUTSIDE_NOTES = ("DESIGN" + ".md", "STYLE" + ".md")
#: Folders of a working copy that are not the project's text (data, runs, caches, builds).
NOT_TEXT = {".git", "data", "checkpoints", "submission", "__pycache__", ".pytest_cache", "build",
            "dist", ".venv"}
BINARY = (".png", ".parquet", ".npy", ".pt", ".pt2", ".onnx", ".zip", ".pyc")


def project_files():
    """Every text file of the project (walks the tree: works outside a git checkout too)."""
    for root, folders, files in os.walk(REPO):
        folders[:] = [name for name in folders
                      if name not in NOT_TEXT and not name.endswith(".egg-info")]
        for name in files:
            if not name.endswith(BINARY):
                yield os.path.relpath(os.path.join(root, name), REPO)


def test_no_project_file_cites_notes_outside_the_repository():
    citing = []
    for name in project_files():
        with open(os.path.join(REPO, name), encoding="utf-8", errors="ignore") as handle:
            text = handle.read()
        citing += [f"{name}: {note}" for note in OUTSIDE_NOTES if note in text]
    assert citing == []


def readme() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def test_every_doc_is_linked_from_the_readme():
    text = readme()
    for name in sorted(os.listdir(os.path.join(REPO, "docs"))):
        assert f"docs/{name}" in text, f"README does not link docs/{name}"


def test_every_doc_linked_from_the_readme_exists():
    linked = set(re.findall(r"\((docs/[^)#\s]+)", readme()))
    assert linked, "the README links no doc"
    missing = sorted(path for path in linked if not os.path.exists(os.path.join(REPO, path)))
    assert missing == []


def module_map() -> str:
    with open(os.path.join(REPO, "docs", "design.md"), encoding="utf-8") as handle:
        text = handle.read()
    start = text.index("## Module map")
    return text[start:text.index("\n## ", start + 1)]


def test_every_module_is_in_the_module_map():
    """A module counts as mapped when its file name (or a pattern such as ``synthetic*.py``)
    appears in the map's block of its folder."""
    text = module_map()
    unmapped = []
    for root, folders, files in os.walk(PACKAGE):
        folders[:] = [name for name in folders if name != "__pycache__"]
        for name in files:
            if not name.endswith(".py") or name == "__init__.py":
                continue
            names = re.findall(r"[\w*]+\.py", text)
            if not any(fnmatch.fnmatch(name, pattern) for pattern in names):
                unmapped.append(os.path.relpath(os.path.join(root, name), PACKAGE))
    assert unmapped == []
