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
