#!/usr/bin/env bash
# Migrations are append-only: a migration that any commit added is never edited, renamed
# or deleted by a later one, and the working tree holds it as committed. sqlx records each
# applied migration's checksum, so an edited file makes every database migrated by an
# earlier build refuse to start ("migration N was previously applied but has been
# modified"). A change of schema is a new file with the next number (deploy/README.md,
# "Upgrading").
set -euo pipefail
cd "$(dirname "$0")/.."

paths=(':(glob)**/migrations/**/*.sql')
failed=0

# Every commit in history that modified, renamed or deleted a migration file.
edits=$(git log --format='%h %s' --diff-filter=MDR -- "${paths[@]}")
if [ -n "$edits" ]; then
    echo "these commits edit, rename or delete a migration that an earlier commit added:" >&2
    while read -r commit _; do
        git show --format='  %h %s' --name-status --diff-filter=MDR "$commit" -- "${paths[@]}" >&2
    done <<<"$edits"
    failed=1
fi

# The work tree (before a commit, or a CI checkout with local changes).
changed=$(git diff --name-status HEAD --diff-filter=MDR -- "${paths[@]}")
if [ -n "$changed" ]; then
    echo "uncommitted edits to committed migrations:" >&2
    echo "$changed" | sed 's/^/  /' >&2
    failed=1
fi

# Each engine's folder of a crate numbers its migrations uniquely (sqlx orders by number).
while read -r dir; do
    dupes=$(ls "$dir" | sed -n 's/^\([0-9]*\)_.*\.sql$/\1/p' | sort | uniq -d)
    if [ -n "$dupes" ]; then
        echo "$dir: migration numbers used twice: $dupes" >&2
        failed=1
    fi
done < <(git ls-files "${paths[@]}" | xargs -n1 dirname | sort -u)

if [ "$failed" -ne 0 ]; then
    echo "FAIL: migrations are append-only; add a new migration instead" >&2
    exit 1
fi
count=$(git ls-files "${paths[@]}" | wc -l)
echo "$count migration files, none edited since it was added"
