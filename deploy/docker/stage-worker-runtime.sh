#!/usr/bin/env bash
# Lays out the worker image's runtime libraries: copies each path listed in
# worker-runtime-paths.txt from a venv's site-packages into DEST, keeping the layout
# (torch's libraries find the nvidia-* ones through $ORIGIN-relative rpaths), then drops
# the files the list leaves out with "!GLOB" lines.
#
#   stage-worker-runtime.sh [--link] SRC_SITE_PACKAGES DEST_SITE_PACKAGES [LIST]
#
# worker.Dockerfile runs it to fill /runtime, which the final stage copies to /.
# deploy/check-image-libs.sh runs it with --link (hard links, no 3 GB copy) to rebuild the
# same layout in a temporary folder.
set -euo pipefail

link=false
if [[ ${1:-} == --link ]]; then
    link=true
    shift
fi
if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 [--link] SRC_SITE_PACKAGES DEST_SITE_PACKAGES [LIST]" >&2
    exit 2
fi
src=${1%/}
dest=${2%/}
list=${3:-$(dirname "${BASH_SOURCE[0]}")/worker-runtime-paths.txt}

paths=()
excludes=()
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    line=${line//[[:space:]]/}
    [[ -z $line ]] && continue
    if [[ $line == '!'* ]]; then
        excludes+=("${line#!}")
    else
        paths+=("${line%/}")
    fi
done <"$list"

if [[ ${#paths[@]} -eq 0 ]]; then
    echo "error: $list lists no path" >&2
    exit 1
fi

for path in "${paths[@]}"; do
    if [[ ! -e $src/$path ]]; then
        echo "error: $src/$path does not exist (listed in $list)" >&2
        exit 1
    fi
    mkdir -p "$dest/$(dirname "$path")"
    if $link; then
        # Hard links where the file system allows them, else a full copy.
        cp -al "$src/$path" "$dest/$(dirname "$path")/" 2>/dev/null \
            || cp -a "$src/$path" "$dest/$(dirname "$path")/"
    else
        cp -a "$src/$path" "$dest/$(dirname "$path")/"
    fi
done

removed=0
while IFS= read -r -d '' file; do
    rel=${file#"$dest"/}
    for glob in "${excludes[@]}"; do
        # shellcheck disable=SC2053  # the right-hand side is a glob on purpose
        if [[ $rel == $glob ]]; then
            rm -f "$file"
            removed=$((removed + 1))
            break
        fi
    done
done < <(find "$dest" \( -type f -o -type l \) -print0)

echo "staged ${#paths[@]} paths from $src into $dest ($removed files left out)"
