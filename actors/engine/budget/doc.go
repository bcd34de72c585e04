// Package budget measures the performance budgets of DESIGN.md section 7
// in-process, with testing.Benchmark on closures over kvmesh's public APIs,
// and says whether each holds: what `kvmesh bench` prints. The same
// measurements exist as `go test -bench` benchmarks beside the code
// (layers/transformer, layers/paged, pagemanager, actors); these repeat them
// without a test binary, each ratio from two measurements of the same run.
package budget
