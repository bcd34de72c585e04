// Package reference is the math that reads kvmesh's caches: grouped-query
// softmax attention over a contiguous cache (a full K/V plus the mask that
// transformer.View.ConcatenateToCache returns) and over a paged cache (page
// pool + page table + positions); the Mamba, Mamba2 and Lightning mixers,
// each with a full-sequence path and a cached step path through the state
// caches; and Hybrid, a tiny model with deterministic random weights that
// mixes those layer kinds, for the serving loop and its verification. It is
// a plain, readable reference, not a fast kernel: it exists to prove,
// against external golden vectors (package parity), that the caches hold
// exactly what the models need.
//
// The mixers run their math in float64 or float32 (Precision), so the same
// code checks the float64 and the float32 oracles; Hybrid runs in float64.
// Nothing here imports the actor runtime.
package reference
