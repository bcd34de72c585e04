package sharding

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Spec is a partition spec (JAX's PartitionSpec): for each tensor axis,
// the mesh axes it is split over (nil: not sharded). Functions of this
// package never modify a Spec they are given; they return fresh ones. Its
// JSON form is a list of entries, each null, "name" or ["name", ...].
type Spec []MeshAxes

// String formats s as Python prints it:
// "PartitionSpec(('fsdp', 'dp'), 'sp', None, None)".
func (s Spec) String() string {
	parts := make([]string, len(s))
	for i, a := range s {
		parts[i] = a.String()
	}
	return "PartitionSpec(" + strings.Join(parts, ", ") + ")"
}

// Clone returns a deep copy of s.
func (s Spec) Clone() Spec {
	if s == nil {
		return nil
	}
	out := make(Spec, len(s))
	for i, a := range s {
		out[i] = slices.Clone(a)
	}
	return out
}

// Equal reports whether s and t have the same rank and entries (a nil and
// an empty entry are equal: both are None).
func (s Spec) Equal(t Spec) bool {
	return slices.EqualFunc(s, t, func(a, b MeshAxes) bool { return slices.Equal(a, b) })
}

// IsReplicated reports whether no entry shards its axis.
func (s Spec) IsReplicated() bool {
	for _, a := range s {
		if !a.IsNone() {
			return false
		}
	}
	return true
}

// MarshalJSON encodes s as a list of entries (an empty list for a nil s).
func (s Spec) MarshalJSON() ([]byte, error) {
	if s == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]MeshAxes(s))
}

// Resolve maps semantic axis names to a partition spec:
// PartitionAxis.resolve_spec. Empty ("_") resolves to None; in a
// generation mode (ModeDecode, ModeInsert) a non-None decode_* override
// takes precedence. An unknown name is an error wrapping ErrUnknownAxis
// with EasyDeL's message ("Unknown semantic axis name: '...'"), and so is
// an invalid mode (ErrMode) or pa failing Validate.
//
// Deviations: EasyDeL also accepts None for Empty (use Empty here) and
// composite entries (a list of names for one tensor axis), which kvmesh's
// caches do not use.
func Resolve(pa PartitionAxis, axes []string, mode Mode) (Spec, error) {
	if !mode.Valid() {
		return nil, fmt.Errorf("%w: %q (want %q, %q, %q or %q)", ErrMode, string(mode), ModePrefill, ModeDecode, ModeTrain, ModeInsert)
	}
	if err := pa.Validate(); err != nil {
		return nil, err
	}
	spec := make(Spec, len(axes))
	for i, name := range axes {
		r, ok := pa.rule(name, mode)
		if !ok {
			return nil, fmt.Errorf("%w: Unknown semantic axis name: '%s' (axis %d of %q)", ErrUnknownAxis, name, i, axes)
		}
		spec[i] = r
	}
	return spec, nil
}

// Correct adapts spec to a tensor of the given shape on mesh, as eformer's
// get_corrected_named_sharding does: the spec is padded with None or
// truncated to the rank of shape, and an entry becomes None when one of
// its mesh axes is not in the mesh, or when its dimension is not
// divisible by the product of its mesh-axis sizes (a negative dimension
// counts as not divisible). Mesh axes of size 1 are kept.
//
// Deviation: an all-None result keeps the tensor's rank (EasyDeL returns
// the rank-less PartitionSpec(); both mean replicated). A spec that uses a
// mesh axis twice is not corrected (JAX rejects it; ShardSlices returns an
// error).
func Correct(spec Spec, shape []int, mesh Mesh) Spec {
	out := make(Spec, len(shape))
	for i := range out {
		if i >= len(spec) || spec[i].IsNone() {
			continue
		}
		prod := 1
		ok := true
		for _, a := range spec[i] {
			if !mesh.Has(a) {
				ok = false
				break
			}
			prod *= mesh.Size(a)
		}
		if ok && shape[i] >= 0 && shape[i]%prod == 0 {
			out[i] = slices.Clone(spec[i])
		}
	}
	return out
}

// ResolveFor resolves axes in mode and corrects the result for shape on
// mesh: eformer's PartitionManager.shard without the device placement
// (apply_logical_sharding).
func ResolveFor(pa PartitionAxis, axes []string, mode Mode, shape []int, mesh Mesh) (Spec, error) {
	s, err := Resolve(pa, axes, mode)
	if err != nil {
		return nil, err
	}
	return Correct(s, shape, mesh), nil
}

// checkSpec reports whether spec can shard shape on mesh as it stands:
// same rank, non-negative dimensions, mesh axes in the mesh and used once,
// dimensions divisible by their shard counts. It returns the number of
// blocks of each dimension.
func checkSpec(shape []int, spec Spec, mesh Mesh) ([]int, error) {
	if mesh.NumDevices() == 0 {
		return nil, fmt.Errorf("%w: the mesh has no devices (use NewMesh)", ErrMesh)
	}
	if len(spec) != len(shape) {
		return nil, fmt.Errorf("%w: %s has %d entries for the rank-%d shape %v (Correct pads or truncates it)",
			ErrSpec, spec, len(spec), len(shape), shape)
	}
	blocks := make([]int, len(shape))
	used := map[string]int{}
	for i, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("%w: dimension %d of shape %v is negative", ErrShape, i, shape)
		}
		blocks[i] = 1
		for _, a := range spec[i] {
			if !mesh.Has(a) {
				return nil, fmt.Errorf("%w: %s entry %d names mesh axis %q, which is not in %s", ErrSpec, spec, i, a, mesh)
			}
			if j, ok := used[a]; ok {
				return nil, fmt.Errorf("%w: %s uses mesh axis %q for tensor axes %d and %d", ErrSpec, spec, a, j, i)
			}
			used[a] = i
			blocks[i] *= mesh.Size(a)
		}
		if d%blocks[i] != 0 {
			return nil, fmt.Errorf("%w: %s splits dimension %d of size %d into %d shards, which does not divide it",
				ErrSpec, spec, i, d, blocks[i])
		}
	}
	return blocks, nil
}
