// Command kvmesh is the kvmesh command line. It is wiring only: each
// subcommand parses flags and calls the packages that do the work.
//
//	kvmesh run                serve a synthetic chat workload on the embedded runtime and report
//	kvmesh bench              measure every performance budget of DESIGN.md section 7
//	kvmesh parity [FILE...]   check the caches against golden vectors
//	kvmesh sim --trace FILE   replay a request trace through the page pool (or --generate one)
//	kvmesh inspect FILE...    validate cache snapshots and summarize them
package main
