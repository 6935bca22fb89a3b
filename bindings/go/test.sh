#!/usr/bin/env bash
# Installs the library into build/install (tools/install.sh), then runs go vet and go test (with and
# without -race) here, offline: the module has no dependencies, so nothing may be downloaded.
set -euo pipefail
cd "$(dirname "$0")"
../../tools/install.sh ../../build/install >/dev/null
# tools/setup.sh installs Debian's Go 1.23 from backports where no go is on PATH.
command -v go >/dev/null || export PATH="/usr/lib/go-1.23/bin:$PATH"
export GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly RUST_BACKTRACE=0
go version
go vet ./...
# The pkg-config way of finding the library must build too.
PKG_CONFIG_PATH="$PWD/../../build/install/lib/pkgconfig" go vet -tags gemma_cyber_pkgconfig ./...
go test -count=1 ./...
go test -count=1 -race ./...

# A user's own module outside this repository, built and run with the steps docs/bindings.md gives,
# as written; its main.go is that page's Go example.
repo="$(cd ../.. && pwd)"
# shellcheck source=../../tools/documented.sh
. "$repo/tools/documented.sh"
outside="$(mktemp -d)"
trap 'rm -rf "$outside"' EXIT
export GEMMA_CYBER="$repo"
docs="$repo/docs/bindings.md"
(
  unset GOFLAGS
  cd "$outside"
  documented "$docs" '"$GEMMA_CYBER/tools/install.sh"'
  documented "$docs" 'mkdir myapp && cd myapp'
  documented_block "$docs" go "## Go" > main.go
  grep -q 'gemmacyber.New' main.go
  documented "$docs" 'go mod init example.com/myapp'
  documented "$docs" 'go mod edit -require=github.com/gemma-cyber/gemma-cyber/bindings/go@v0.0.0 -replace=github.com/gemma-cyber/gemma-cyber/bindings/go="$GEMMA_CYBER/bindings/go"'
  documented "$docs" 'go mod tidy'
  documented "$docs" 'go run .' | tee run.out
  grep -q '^\[' run.out
)
