// Package messages holds kvmesh's wire types: the kvmesh.v1 protobuf
// definitions (kvmesh.proto) of every actor message and reply — metadata,
// tensor payloads as bytes with dtype and shape, per-layer writes for each
// cache kind, page allocation, snapshots and status codes — and the
// generated Go (kvmesh.pb.go), checked in. `go generate ./messages/...`
// regenerates it with Debian's protoc and a pinned protoc-gen-go (gen.sh);
// CI checks that the checked-in code is current.
//
// In-process, the actor runtime passes Go values by reference and never
// marshals these; they are the form of remote hops and of status replies.
package messages
