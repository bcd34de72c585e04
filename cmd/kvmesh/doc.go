// Command kvmesh is the kvmesh command line. It is wiring only: each
// subcommand parses flags and calls the packages that do the work.
//
//	kvmesh parity [FILE...]   check the caches against golden vectors
package main
