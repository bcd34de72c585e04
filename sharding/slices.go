package sharding

import (
	"fmt"
	"slices"
)

// Range is the half-open index range [Start, End) of one tensor axis.
type Range struct {
	Start, End int
}

// Len returns End - Start.
func (r Range) Len() int { return r.End - r.Start }

// String formats r as "[start, end)".
func (r Range) String() string { return fmt.Sprintf("[%d, %d)", r.Start, r.End) }

// Slice is the part of a tensor that one device holds under a spec.
type Slice struct {
	// Device is the device that holds the slice.
	Device Device
	// Index is the device's position in the mesh's device order.
	Index int
	// Ranges are the slice's index ranges, one per tensor axis.
	Ranges []Range
	// Shard numbers the distinct slices 0..NumShards-1, row-major over
	// the tensor axes' block indices; devices with the same Shard hold
	// identical slices (replicas).
	Shard int
	// Replica numbers the devices holding the same slice, 0..NumReplicas-1,
	// in device order.
	Replica int
	// Primary is the Index of the replica-0 device of the slice: the
	// lowest device index holding the same slice.
	Primary int
}

// Shape returns the slice's shape.
func (s Slice) Shape() []int {
	sh := make([]int, len(s.Ranges))
	for i, r := range s.Ranges {
		sh[i] = r.Len()
	}
	return sh
}

// Len returns the number of elements of the slice.
func (s Slice) Len() int {
	n := 1
	for _, r := range s.Ranges {
		n *= r.Len()
	}
	return n
}

// Intersect clips box (global index ranges, one per tensor axis) to the
// slice. It returns the clipped box in global coordinates, the same box in
// the slice's local coordinates, and whether it is non-empty. This is how
// a write to a box of the full tensor becomes a write to one shard.
func (s Slice) Intersect(box []Range) (global, local []Range, ok bool) {
	if len(box) != len(s.Ranges) {
		return nil, nil, false
	}
	global = make([]Range, len(box))
	local = make([]Range, len(box))
	for i, b := range box {
		lo, hi := max(b.Start, s.Ranges[i].Start), min(b.End, s.Ranges[i].End)
		if lo >= hi {
			return nil, nil, false
		}
		global[i] = Range{lo, hi}
		local[i] = Range{lo - s.Ranges[i].Start, hi - s.Ranges[i].Start}
	}
	return global, local, true
}

// ShardSlices returns the slice of a tensor of the given shape that each
// device of mesh holds under spec, in device order.
//
// A tensor axis whose entry names mesh axes (a1, ..., ak) is cut into
// size(a1)·...·size(ak) equal blocks; a device takes the block whose index
// is its coordinates on (a1, ..., ak) read as a mixed-radix number, a1
// the most significant digit (JAX's layout). Devices that differ only on
// mesh axes the spec does not use hold the same slice; their Replica is
// their coordinates on those axes read in device order, so the replica-0
// device is the lowest index holding the slice.
//
// The spec must fit as it stands: one entry per axis, mesh axes in the
// mesh and used at most once, every sharded dimension divisible by its
// block count (use Correct first). Otherwise the error wraps ErrSpec (or
// ErrShape for a negative dimension) and names the entry.
func ShardSlices(shape []int, spec Spec, mesh Mesh) ([]Slice, error) {
	blocks, err := checkSpec(shape, spec, mesh)
	if err != nil {
		return nil, err
	}
	// Mesh axes the spec does not use, in device order: they number the
	// replicas.
	var free []Axis
	for _, a := range mesh.axes {
		if !slices.ContainsFunc(spec, func(e MeshAxes) bool { return slices.Contains(e, a.Name) }) {
			free = append(free, a)
		}
	}
	out := make([]Slice, mesh.NumDevices())
	for i := range out {
		s := Slice{Device: mesh.devices[i], Index: i, Ranges: make([]Range, len(shape))}
		for d, e := range spec {
			blk := 0
			for _, a := range e {
				blk = blk*mesh.Size(a) + mesh.Coord(i, a)
			}
			size := shape[d] / blocks[d]
			s.Ranges[d] = Range{blk * size, (blk + 1) * size}
			s.Shard = s.Shard*blocks[d] + blk
		}
		primary := i
		for _, a := range free {
			c := mesh.Coord(i, a.Name)
			s.Replica = s.Replica*a.Size + c
			primary -= c * mesh.strides[mesh.axisPos(a.Name)]
		}
		s.Primary = primary
		out[i] = s
	}
	return out, nil
}
