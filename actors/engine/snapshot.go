package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// ErrSnapshot reports a version MarshalVersion cannot encode: no views, or
// views of more than one kind.
var ErrSnapshot = errors.New("engine: cannot snapshot version")

// MarshalVersion encodes v as its kind's cache snapshot: the views become a
// transformer, paged, mamba, mamba2 or lightning Cache, whose MarshalBinary
// gives the bytes (the safetensors layout `kvmesh inspect` reads and the
// kind's UnmarshalCache decodes). A sharded layer is joined first
// (actors.Version.Layer). Read it only while no step runs on the cache:
// positions a version cannot see are encoded as they read (see
// actors.Version.Layer).
func MarshalVersion(v actors.Version) ([]byte, error) {
	if len(v.Views) == 0 {
		return nil, fmt.Errorf("%w: version %d has no views", ErrSnapshot, v.Number)
	}
	views := make([]any, len(v.Views))
	for l := range v.Views {
		var err error
		if views[l], err = v.Layer(l); err != nil {
			return nil, err
		}
	}
	switch views[0].(type) {
	case transformer.View:
		return marshalAs(v.Number, transformer.InitEmpty(len(views)), views)
	case paged.View:
		c, err := paged.InitEmpty(len(views))
		if err != nil {
			return nil, err
		}
		return marshalAs(v.Number, c, views)
	case mamba.View:
		return marshalAs(v.Number, mamba.InitEmpty(len(views)), views)
	case mamba2.View:
		return marshalAs(v.Number, mamba2.InitEmpty(len(views)), views)
	case lightning.View:
		return marshalAs(v.Number, lightning.InitEmpty(len(views)), views)
	}
	return nil, fmt.Errorf("%w: version %d: layer 0 is a %T, not a cache view", ErrSnapshot, v.Number, views[0])
}

// cacheOf is what MarshalVersion needs of a kind's Cache.
type cacheOf[V, C any] interface {
	WithView(i int, v V) (C, error)
	MarshalBinary() ([]byte, error)
}

// marshalAs sets every view of views (all of type V) into the empty cache c
// and encodes it.
func marshalAs[V any, C cacheOf[V, C]](number uint64, c C, views []any) ([]byte, error) {
	for l, view := range views {
		v, ok := view.(V)
		if !ok {
			var want V
			return nil, fmt.Errorf("%w: version %d: layer %d is a %T, layer 0 a %T", ErrSnapshot, number, l, view, want)
		}
		var err error
		if c, err = c.WithView(l, v); err != nil {
			return nil, fmt.Errorf("%w: version %d: layer %d: %w", ErrSnapshot, number, l, err)
		}
	}
	return c.MarshalBinary()
}

// snapshot hands each cache's current version to cfg.Snapshot, in the
// order of Config.CacheIDs.
func (e *engine) snapshot(ctx context.Context) error {
	caches := map[string]Cache{"kv": e.kv, "mamba2": e.m2, "lightning": e.lt}
	for _, id := range e.cfg.CacheIDs() {
		c := caches[id]
		if c == nil {
			return fmt.Errorf("%w: cache %q of Config.CacheIDs was not created", ErrInternal, id)
		}
		v, err := c.Current(ctx)
		if err != nil {
			return fmt.Errorf("snapshot of cache %s: %w", id, err)
		}
		if err := e.cfg.Snapshot(id, v); err != nil {
			return fmt.Errorf("snapshot of cache %s (version %d): %w", id, v.Number, err)
		}
	}
	return nil
}
