package snapshot

import (
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// seeds are small snapshots of every kind, view and cache, and a plain
// safetensors file.
func seeds(t testing.TB) [][]byte {
	must := func(data []byte, err error) []byte {
		require.NoError(t, err)
		return data
	}
	tm, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 1, SequenceLength: 2, NumHiddenLayers: 2,
		NumHeads: transformer.Ptr(1), HeadDim: transformer.Ptr(2)})
	require.NoError(t, err)
	tc, err := transformer.InitStorage(tm, transformer.Storage{DType: tensor.Float32, Quantization: tensor.Int8}, nil)
	require.NoError(t, err)
	pc, err := paged.Init(paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 3, NumPagesPerSequence: 2, MaxSequences: 4,
		PageSize: 2, NumKVHeads: 1, KVHeadDimSize: 2, HBMUtilization: 0.9}, tensor.Float32)
	require.NoError(t, err)
	mm, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: 2, SSMStateSize: 2, ConvKernelSize: 2})
	require.NoError(t, err)
	mc, err := mamba.Init(mm, tensor.Float32)
	require.NoError(t, err)
	m2m, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: 2, NumHeads: 1, HeadDim: 2,
		StateSize: 2, ConvKernelSize: 2, NGroups: 1})
	require.NoError(t, err)
	m2c, err := mamba2.Init(m2m, tensor.Float32)
	require.NoError(t, err)
	b, h, d := 1, 1, 2
	lm, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: &b, NumHeads: &h, HeadDim: &d})
	require.NoError(t, err)
	lc, err := lightning.Init(1, lm, tensor.Float32)
	require.NoError(t, err)
	lc, err = lc.Update(0, ramp(1, 1, 1, 2), ramp(1, 1, 1, 2), []float64{0.5})
	require.NoError(t, err)

	out := [][]byte{must(tc.MarshalBinary()), must(pc.MarshalBinary()), must(mc.MarshalBinary()), must(m2c.MarshalBinary()),
		must(lc.MarshalBinary())}
	for _, v := range []interface{ MarshalBinary() ([]byte, error) }{
		must2(tc.View(0)), must2(pc.View(0)), must2(mc.View(0)), must2(m2c.View(0)), must2(lc.View(0)),
	} {
		out = append(out, must(v.MarshalBinary()))
	}
	plain := tensor.Snapshot{Tensors: map[string]tensor.Tensor{"w": ramp(2)}, Int32s: map[string][]int32{"ids": {1}}}
	return append(out, must(plain.MarshalBinary()))
}

// must2 drops a View error the seeds cannot have.
func must2[V any](v V, err error) V {
	if err != nil {
		panic(err)
	}
	return v
}

// Describe never panics; it accepts data with a consistent description
// (views, empty views, tensors in name order and their total, the data's
// size) that encodes and prints, or fails with one of its sentinels.
func FuzzDescribe(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Describe(data)
		if err != nil {
			if !errors.Is(err, ErrNotSafetensors) && !errors.Is(err, ErrUnknownFormat) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v wraps none of the sentinels", err)
			}
			return
		}
		assert.Equal(t, int64(len(data)), info.FileBytes)
		assert.Len(t, info.Views, info.NumViews)
		var empty []int
		for i, v := range info.Views {
			assert.Equal(t, i, v.Position)
			if v.Empty {
				empty = append(empty, i)
			}
		}
		assert.Equal(t, len(empty), len(info.EmptyViews))
		assert.True(t, slices.Equal(empty, info.EmptyViews), "empty views %v, want %v", info.EmptyViews, empty)
		var total int64
		for _, x := range info.Tensors {
			total += x.Bytes
		}
		assert.Equal(t, total, info.TensorBytes)
		assert.True(t, slices.IsSortedFunc(info.Tensors, func(a, b Tensor) int { return naturalCompare(a.Name, b.Name) }))
		_, err = json.Marshal(info)
		assert.NoError(t, err)
		assert.NoError(t, info.WriteText(io.Discard))
	})
}
