package convssm

import (
	"encoding/json"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/internal/rawjson"
	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// Layout is one view package's State operations (ShardOps, with its
// sentinel errors and names) together with what its metadata M tells them:
// the states' shapes and a shard's metadata. It does the package-neutral
// work of the package's NewView, Specs, Split, JoinViews and snapshot
// entries, in the order those document; the view types keep their own
// fields (e.g. mamba2's seqlen_offset) and compose the results. Its Split
// and Join take the metadata and hide ShardOps.Split and ShardOps.Join,
// which they call with the metadata's shapes.
type Layout[M any] struct {
	ShardOps
	// Validate checks metadata as the package's Metadata.Validate does.
	Validate func(meta M) error
	// Shapes returns the conv state (B, C, K) and SSM state (B, ...) shapes
	// that meta prescribes.
	Shapes func(meta M) (conv, ssm []int)
	// ShardMeta checks that s fits meta's State on mesh, by o's CheckFit
	// and CheckBatch and the package's own rules, and returns a shard
	// view's metadata.
	ShardMeta func(o ShardOps, meta M, s Specs, mesh sharding.Mesh) (M, error)
}

// New returns the zero State meta prescribes, of dtype (NewView): meta
// must pass Validate (its error is returned as it is), then New's checks
// apply.
func (l Layout[M]) New(meta M, dtype tensor.DType) (State, error) {
	if err := l.Validate(meta); err != nil {
		return State{}, err
	}
	conv, ssm := l.Shapes(meta)
	return l.Ops.New(dtype, conv, ssm)
}

// Specs returns the specs of st, a view's State of metadata meta:
// stateAxes and posAxes resolved by pa in mode and corrected for meta's
// shapes on mesh (Resolve). An empty st wraps Empty.
func (l Layout[M]) Specs(st State, meta M, pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh, stateAxes, posAxes []string) (Specs, error) {
	if err := l.NotEmpty(st, "Specs"); err != nil {
		return Specs{}, err
	}
	conv, ssm := l.Shapes(meta)
	return l.Resolve(pa, mode, mesh, stateAxes, posAxes, conv, ssm)
}

// Split cuts st, a view's State of metadata meta, by s over mesh: it
// returns a shard's metadata (ShardMeta) and one State per device, in
// device order (ShardOps.Split). An empty st wraps Empty.
func (l Layout[M]) Split(st State, meta M, s Specs, mesh sharding.Mesh) (M, []State, error) {
	var zero M
	if err := l.NotEmpty(st, "Split"); err != nil {
		return zero, nil, err
	}
	sm, err := l.ShardMeta(l.ShardOps, meta, s, mesh)
	if err != nil {
		return zero, nil, err
	}
	conv, ssm := l.Shapes(sm)
	parts, err := l.ShardOps.Split(st, s, mesh, conv, ssm)
	if err != nil {
		return zero, nil, err
	}
	return sm, parts, nil
}

// Join rebuilds the State of metadata meta that Split cut by s over mesh
// from the shard views' States (ShardOps.Join, with agree): meta must pass
// Validate and s ShardMeta first.
func (l Layout[M]) Join(parts []State, meta M, s Specs, mesh sharding.Mesh, agree func(i int) error) (State, error) {
	if err := l.Validate(meta); err != nil {
		return State{}, err
	}
	if _, err := l.ShardMeta(l.ShardOps, meta, s, mesh); err != nil {
		return State{}, err
	}
	conv, ssm := l.Shapes(meta)
	return l.ShardOps.Join(parts, s, mesh, conv, ssm, agree)
}

// Put stores a non-empty view's snapshot entries: its metadata (JSON),
// layer index and State (package Put).
func (l Layout[M]) Put(e viewsnap.Entry, meta M, layer layerlist.Index, st State) error {
	if err := e.SetMetadata(meta); err != nil {
		return err
	}
	e.SetLayerIndex(layer.Get())
	Put(e, st)
	return nil
}

// GetHeader decodes a view's metadata, which must pass Validate, and its
// layer index from its snapshot entries.
func (l Layout[M]) GetHeader(e viewsnap.Entry) (M, layerlist.Index, error) {
	var meta, zero M
	if err := e.Metadata(&meta); err != nil {
		return zero, layerlist.Index{}, err
	}
	if err := l.Validate(meta); err != nil {
		return zero, layerlist.Index{}, err
	}
	layer, err := e.LayerIndex()
	if err != nil {
		return zero, layerlist.Index{}, err
	}
	return meta, layerlist.IndexOf(layer), nil
}

// GetState decodes a view's State from its snapshot entries, checking it
// against the shapes meta prescribes (Ops.Get).
func (l Layout[M]) GetState(e viewsnap.Entry, meta M) (State, error) {
	conv, ssm := l.Shapes(meta)
	return l.Get(e, conv, ssm)
}

// Sizes are a metadata's sizes with their EasyDeL names, in the order
// EasyDeL checks them.
type Sizes []struct {
	Name  string
	Value int
}

// CheckMetadata checks a Mamba-family metadata as EasyDeL's create does,
// then as kvmesh adds: every size positive, in order ("batch_size must be
// positive (got 0)"); num_hidden_layers not negative; partition_axis valid
// JSON (or absent). Failures wrap sentinel (the package's ErrMetadata).
func CheckMetadata(sentinel error, sizes Sizes, numHiddenLayers int, partitionAxis json.RawMessage) error {
	for _, f := range sizes {
		if f.Value <= 0 {
			return fmt.Errorf("%w: %s must be positive (got %d)", sentinel, f.Name, f.Value)
		}
	}
	if numHiddenLayers < 0 {
		return fmt.Errorf("%w: num_hidden_layers must not be negative (got %d)", sentinel, numHiddenLayers)
	}
	return rawjson.Check(sentinel, "partition_axis", partitionAxis)
}
