// Command kvmesh is the kvmesh command line. It is wiring only: each
// subcommand parses flags and calls the packages that do the work.
//
//	kvmesh run                serve a synthetic chat workload on the embedded runtime and report
//	kvmesh parity [FILE...]   check the caches against golden vectors
package main
