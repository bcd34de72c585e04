package layerlist

import (
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Index is a view's optional layer index: EasyDeL's layer_index, which may
// be None. The zero Index is None.
type Index struct {
	layer int
	ok    bool
}

// IndexOf returns the Index p points to, None when p is nil.
func IndexOf(p *int) Index {
	if p == nil {
		return Index{}
	}
	return Index{layer: *p, ok: true}
}

// Get returns the layer index; ok is false for None.
func (i Index) Get() (layer int, ok bool) { return i.layer, i.ok }

// String formats the index as EasyDeL's repr does: the number, or "None".
func (i Index) String() string {
	if !i.ok {
		return "None"
	}
	return strconv.Itoa(i.layer)
}

// Part is a shard view as CheckParts sees it: a view (or a view's state)
// that may be empty and has a dtype.
type Part interface {
	IsEmpty() bool
	DType() tensor.DType
}

// CheckParts checks the shard views that a view package's JoinViews
// rebuilds a view from: one per device of the mesh (devices), then part by
// part: not empty, of part 0's dtype, and agree(i), the caller's check of
// the fields it holds besides (e.g. CheckLayer), whose error is returned as
// it is. The other failures wrap sentinel (the package's sharding error)
// and name the part.
func CheckParts[P Part](sentinel error, parts []P, devices int, agree func(i int) error) error {
	if len(parts) != devices {
		return fmt.Errorf("%w: %d shard views for a mesh of %d devices", sentinel, len(parts), devices)
	}
	for i, p := range parts {
		if p.IsEmpty() {
			return fmt.Errorf("%w: shard view %d is empty", sentinel, i)
		}
		if p.DType() != parts[0].DType() {
			return fmt.Errorf("%w: shard view %d is %s, shard view 0 is %s", sentinel, i, p.DType(), parts[0].DType())
		}
		if err := agree(i); err != nil {
			return err
		}
	}
	return nil
}

// CheckLayer checks that shard view i's layer index is shard view 0's,
// want. The failure wraps sentinel.
func CheckLayer(sentinel error, i int, got, want Index) error {
	if got != want {
		return fmt.Errorf("%w: shard view %d has layer index %s, shard view 0 has %s", sentinel, i, got, want)
	}
	return nil
}
