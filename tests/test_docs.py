"""The project's text stands alone: it never points at design notes kept outside the repository."""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Names of notes that live outside the repository (built here so this file does not match).
OUTSIDE_NOTES = ("DESIGN" + ".md", "STYLE" + ".md")


def test_no_tracked_file_cites_notes_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    citing = []
    for name in files:
        path = os.path.join(REPO, name)
        if not os.path.isfile(path) or name.endswith((".png", ".parquet", ".npy", ".pt")):
            continue
        with open(path, encoding="utf-8", errors="ignore") as handle:
            text = handle.read()
        citing += [f"{name}: {note}" for note in OUTSIDE_NOTES if note in text]
    assert citing == []


def test_every_doc_linked_from_the_readme_exists():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    for name in sorted(os.listdir(os.path.join(REPO, "docs"))):
        assert f"docs/{name}" in readme, f"README does not link docs/{name}"
