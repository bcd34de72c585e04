#!/bin/sh
# Regenerates kvmesh.pb.go from kvmesh.proto with Debian's protoc
# (package protobuf-compiler) and a pinned protoc-gen-go. Run through
# `go generate ./messages/...`.
set -eu
cd "$(dirname "$0")"
command -v protoc >/dev/null || { echo "gen.sh: protoc not found; apt-get install protobuf-compiler" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
protoc --plugin=protoc-gen-go="$bin/protoc-gen-go" --go_out=. --go_opt=paths=source_relative kvmesh.proto
