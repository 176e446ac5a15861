#!/usr/bin/env bash
# Build FerretDB 1.24 (SQLite backend) from the Go module proxy into the cache, once.
# A plain `go install` leaves out build/version/version.txt, which FerretDB writes at release
# time and panics without at start-up; we build from a copy of the module with that file supplied.
# The patches in patches/ are applied to that copy (each says why at its top); the binary's folder
# is named by the version and the patches' digest, so a changed patch builds a new binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
FERRETDB_VERSION="${FERRETDB_VERSION:-v1.24.2}"
CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
# FERRETDB_PATCHES=<folder> builds with another set (an empty folder: FerretDB as released, to
# measure the difference the patches make).
shopt -s nullglob
patches=("${FERRETDB_PATCHES:-$here/patches}"/*.patch)
digest="$(cat "${patches[@]}" /dev/null | sha256sum | cut -c1-12)"
BIN="$CACHE/ferretdb/$FERRETDB_VERSION-$digest/ferretdb"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "go is required to build FerretDB" >&2; exit 1; }
work="$(mktemp -d)"; trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod
src="$(cd "$work" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
printf '%s\n' "$FERRETDB_VERSION" > "$work/src/build/version/version.txt"
printf 'avis\n' > "$work/src/build/version/package.txt"
for p in "${patches[@]+"${patches[@]}"}"; do (cd "$work/src" && git apply -p1 "$p"); done
mkdir -p "$(dirname "$BIN")"
# No debug information compiled or linked (-dwarf=false, -s -w): less work for the compiler and
# the linker, above all on modernc.org/sqlite, SQLite translated to one very large Go package.
(cd "$work/src" && CGO_ENABLED=0 go build -trimpath -gcflags=all=-dwarf=false -ldflags "-s -w" \
   -o "$BIN.tmp" ./cmd/ferretdb)
mv "$BIN.tmp" "$BIN"
echo "$BIN"
