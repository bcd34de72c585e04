package sharding

import (
	"fmt"
	"slices"
)

// Blocks returns the number of blocks the entry a cuts its tensor axis into
// on mesh: the product of the sizes of its mesh axes, 1 for None. A mesh
// axis the mesh lacks counts as size 1 (ShardSlices rejects such a spec).
func (a MeshAxes) Blocks(mesh Mesh) int {
	n := 1
	for _, name := range a {
		n *= mesh.Size(name)
	}
	return n
}

// Pick returns a new spec whose entry i is a copy of s[axes[i]], or None
// when axes[i] is negative. It derives the spec of a write's input from the
// spec of the tensor it writes: for example the new key vectors (B, q, H, D)
// of a (B, S, H, D) cache take kv.Pick(0, -1, 2, 3), since every shard of a
// row receives all q new tokens. An index at or past len(s) panics: that is
// a programmer error.
func (s Spec) Pick(axes ...int) Spec {
	out := make(Spec, len(axes))
	for i, a := range axes {
		if a >= 0 {
			out[i] = slices.Clone(s[a])
		}
	}
	return out
}

// SplitValues cuts the 1-D Go slice xs by the rank-1 spec over mesh: one
// slice per device, in device order, each a fresh copy of that device's
// range (ShardSlices). It is Split for the small per-row arrays of caches
// (index, starts, positions, per-head slope rates), which are not tensors.
func SplitValues[T any](xs []T, spec Spec, mesh Mesh) ([][]T, error) {
	sl, err := ShardSlices([]int{len(xs)}, spec, mesh)
	if err != nil {
		return nil, err
	}
	parts := make([][]T, len(sl))
	for i, s := range sl {
		r := s.Ranges[0]
		parts[i] = slices.Clone(xs[r.Start:r.End])
	}
	return parts, nil
}

// JoinValues rebuilds the 1-D slice of n values from one part per device
// (in device order) cut by the rank-1 spec over mesh: the inverse of
// SplitValues. Every part must have its device's range length, and each
// replica must equal its primary, or the error wraps ErrReplicaMismatch and
// names both devices and the first differing element.
func JoinValues[T comparable](parts [][]T, spec Spec, mesh Mesh, n int) ([]T, error) {
	sl, err := ShardSlices([]int{n}, spec, mesh)
	if err != nil {
		return nil, err
	}
	if len(parts) != len(sl) {
		return nil, fmt.Errorf("%w: %d parts for a mesh of %d devices", ErrShape, len(parts), len(sl))
	}
	out := make([]T, n)
	for i, s := range sl {
		r := s.Ranges[0]
		if len(parts[i]) != r.Len() {
			return nil, fmt.Errorf("%w: part %d (device id %d) has %d values, want %d (slice %v of %d)",
				ErrShape, i, s.Device.ID, len(parts[i]), r.Len(), r, n)
		}
		if s.Replica == 0 {
			copy(out[r.Start:r.End], parts[i])
			continue
		}
		for k, x := range parts[i] {
			if x != parts[s.Primary][k] {
				p := sl[s.Primary]
				return nil, fmt.Errorf("%w: device %d (id %d) and its replica device %d (id %d) differ at element %d: %v and %v",
					ErrReplicaMismatch, p.Index, p.Device.ID, i, s.Device.ID, r.Start+k, parts[s.Primary][k], x)
			}
		}
	}
	return out, nil
}
