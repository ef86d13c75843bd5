#!/usr/bin/env bash
# Installs FerretDB v1.24.2 (SQLite backend) into the cache dir, once; prints the binary's path.
#
# First the plain `go install …@v1.24.2`. Where that cannot work, build the same module version from the
# Go module cache: the module proxy here refuses the `@v/list` look-up that `go install pkg@version` makes,
# and a binary built from the module zip panics at start because the zip lacks build/version/version.txt,
# which FerretDB embeds. Both ways build exactly v1.24.2 as published.
set -euo pipefail
VERSION=v1.24.2
CACHE="${KOA_AUDIT_CACHE:-$HOME/.cache/koa-audit}"
BIN="$CACHE/bin/ferretdb"

# grep without -q reads all of the output: -q would exit at the first line, and the SIGPIPE that ferretdb then
# gets fails the pipeline under pipefail, making a working binary look broken (and rebuilt) on a loaded machine.
works() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep "version: $VERSION" >/dev/null; }

if works; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "install-ferretdb: go is not installed" >&2; exit 1; }
mkdir -p "$CACHE/bin"

if GOBIN="$CACHE/bin" go install "github.com/FerretDB/FerretDB/cmd/ferretdb@$VERSION" >&2 2>/dev/null && works; then
  echo "$BIN"; exit 0
fi

echo "install-ferretdb: building $VERSION from the module cache" >&2
dir=$(cd /tmp && go mod download -json "github.com/FerretDB/FerretDB@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "install-ferretdb: could not download the FerretDB module" >&2; exit 1; }
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$dir/." "$src/"
chmod -R u+w "$src"
echo "$VERSION" > "$src/build/version/version.txt"
(cd "$src" && go build -o "$BIN.tmp" ./cmd/ferretdb)
mv "$BIN.tmp" "$BIN"
works || { echo "install-ferretdb: the built binary does not run" >&2; exit 1; }
echo "$BIN"
