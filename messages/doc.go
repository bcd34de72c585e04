// Package messages will hold kvmesh's wire types: the kvmesh.v1 protobuf
// definitions of every actor message and reply, and the generated Go,
// checked in (DESIGN.md section 5). It has no code yet.
package messages
