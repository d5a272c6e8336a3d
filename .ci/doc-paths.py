#!/usr/bin/env python3
"""The docs are true: every repository path they name exists, and every service is listed.

Reads the Markdown the project keeps (README, ARCHITECTURE, docs/, deploy/, tests/) and
every path-like name in backticks or in a link target: one starting at a top-level folder
of the repository (crates/, services/, proto/, tests/, deploy/, docs/, .ci/) must exist
from the root or the document; a shorter one named in context (`wire/limits.rs`,
`feed/`) must end some path the repository tracks. Names with
placeholders (`<service>`, `*`, `{...}`, `$VAR`) are patterns, not paths, and are skipped,
as are places git ignores (what the project generates, such as `deploy/secrets/`).
Fails naming each missing path and where it is named, so docs that move with the code
stay true.
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP = ("crates/", "services/", "proto/", "tests/", "deploy/", "docs/", ".ci/")
# What a name in context ends with to count as a path (a file of ours, or a folder).
PATH_LIKE = re.compile(r"/.*(\.(rs|proto|sh|py|md|sql|ts|js|yaml|toml|json)|/)$")
CANDIDATE = re.compile(r"`([^`\n]+)`|\]\(([^)\s]+)\)")


def documents():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if "node_modules" not in name]


def named_paths(text):
    for match in CANDIDATE.finditer(text):
        name = (match.group(1) or match.group(2)).strip()
        name = name.split("#", 1)[0].rstrip(".,;:")
        # `path:line` and `path:12-30` name a file too.
        name = re.sub(r":\d+(-\d+)?$", "", name)
        if any(c in name for c in "<>*{}$ |") or name.startswith(("http", "/", "../")):
            continue
        if name.startswith(TOP) or PATH_LIKE.search(name):
            yield name


def ignored(name):
    """Whether git ignores `name`: a place the project generates (`deploy/secrets/`)."""
    return subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT).returncode == 0


def unlisted_services():
    """Services (folders under services/) missing from deploy/README.md's service table."""
    table = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| ([a-z-]+) \| `agilepm-\1` \|", table, re.M))
    present = {p.name for p in (ROOT / "services").iterdir() if (p / "Cargo.toml").exists()}
    return sorted(present - listed), sorted(listed - present)


def tracked():
    """Every path git tracks, and every folder above one, each as `/path` (and `/dir/`)."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    paths = set()
    for name in files:
        parts = name.split("/")
        paths.add("/" + name)
        for end in range(1, len(parts)):
            paths.add("/" + "/".join(parts[:end]) + "/")
    return paths


def exists(name, document, known):
    if (ROOT / name).exists() or (document.parent / name).exists() or ignored(name):
        return True
    # Named in context: the end of a tracked path.
    if not name.startswith(TOP):
        suffix = "/" + name.removeprefix("./")
        return any(path.endswith(suffix) for path in known)
    return False


def main():
    unlisted, gone = unlisted_services()
    if unlisted or gone:
        print(f"deploy/README.md's service table: missing {unlisted}, no such service {gone}")
        return 1
    missing = []
    known = tracked()
    for document in documents():
        text = document.read_text(encoding="utf-8")
        for name in sorted(set(named_paths(text))):
            # A link is relative to its document; a name in backticks to the repository.
            if not exists(name, document, known):
                missing.append(f"{document.relative_to(ROOT)}: {name}")
    if missing:
        print("paths the docs name that do not exist:", *missing, sep="\n  ")
        return 1
    print(f"every path named in {len(documents())} documents exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
