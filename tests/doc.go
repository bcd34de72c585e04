// Package tests holds kvmesh's cross-package tests: the import rules that
// keep the core free of actors, and (as the runtime grows) oracle parity,
// actor-level and cluster tests. It has no code of its own.
package tests
