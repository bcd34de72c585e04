// Package reference is the math that reads kvmesh's caches: grouped-query
// softmax attention over a contiguous cache (a full K/V plus the mask that
// transformer.View.ConcatenateToCache returns) and over a paged cache (page
// pool + page table + positions). It is a plain, readable reference, not a
// fast kernel: it exists to prove, against external golden vectors, that the
// caches hold exactly what attention needs.
//
// Every function runs its math in float64 or float32 (Precision), so the
// same code checks the float64 and the float32 oracles.
package reference
