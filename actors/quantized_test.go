package actors

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// quantizedStorages are the quantized contiguous storages the tests of this
// file run on: int8 and NF4 with a block of 2 (the head dim is 2).
var quantizedStorages = []transformer.Storage{
	{DType: tensor.BFloat16, Quantization: tensor.Int8},
	{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 2},
}

// quantMeta is transformerCase's metadata with b rows.
func quantMeta(t *testing.T, b int) transformer.Metadata {
	t.Helper()
	m, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: b, SequenceLength: trS, NumHiddenLayers: trL,
		NumHeads: transformer.Ptr(trH), HeadDim: transformer.Ptr(trD)})
	require.NoError(t, err)
	return m
}

// prefilled returns a b-row cache stored as st whose rows start at starts
// and hold n random tokens in every layer.
func prefilled(t *testing.T, r *rand.Rand, b int, st transformer.Storage, starts []int32, n int) transformer.Cache {
	t.Helper()
	c, err := transformer.InitStorage(quantMeta(t, b), st, starts)
	require.NoError(t, err)
	for l := range c.Len() {
		v, err := c.View(l)
		require.NoError(t, err)
		v, err = v.Append(randTensor(r, b, n, trH, trD), randTensor(r, b, n, trH, trD))
		require.NoError(t, err)
		c, err = c.WithView(l, v)
		require.NoError(t, err)
	}
	return c
}

// layerView returns layer l of v as a transformer.View (joined when
// sharded).
func layerView(t *testing.T, v Version, l int) transformer.View {
	t.Helper()
	x, err := v.Layer(l)
	require.NoError(t, err)
	tv, ok := x.(transformer.View)
	require.True(t, ok, "layer %d is a %T", l, x)
	return tv
}

// A quantized contiguous cache (TransformerSpec.Quantization) keeps its
// storage through a step, an insert and a transaction, unsharded and
// sharded, and every version holds the codes and scales the core gives
// for the same operations (ConcatenateToCache, Cache.Insert) byte for
// byte; the inserted rows' codes and scales arrive verbatim.
func TestQuantizedTransformerStepInsertTxn(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	for _, st := range quantizedStorages {
		for _, ms := range []struct{ dp, tp int }{{1, 1}, {2, 2}} {
			t.Run(fmt.Sprintf("%s/dp=%d/tp=%d", st, ms.dp, ms.tp), func(t *testing.T) {
				r := rand.New(rand.NewSource(21))
				starts := []int32{0, 1, 0, 2}
				spec := Spec{Transformer: &TransformerSpec{Metadata: quantMeta(t, trB), DType: st.DType,
					Quantization: st.Quantization, BlockSize: st.BlockSize, Starts: starts}}
				require.Equal(t, st, spec.Transformer.Storage())
				mesh := testMesh(t, ms.dp, ms.tp)
				spec.Mesh, spec.PartitionAxis = &mesh, kvHeadsOverTP()
				c, err := rt.NewCache(fmt.Sprintf("quant %s %d %d", st, ms.dp, ms.tp), spec)
				require.NoError(t, err)
				defer func() { require.NoError(t, c.Close()) }()

				ref, err := transformer.InitStorage(quantMeta(t, trB), st, starts)
				require.NoError(t, err)
				refs := []transformer.Cache{ref}
				check := func(n uint64) {
					t.Helper()
					got, err := c.Snapshot(ctx, n)
					require.NoError(t, err)
					for l := range trL {
						want, err := refs[n].View(l)
						require.NoError(t, err)
						g := layerView(t, got, l)
						require.True(t, g.IsQuantized())
						require.NoError(t, sameContiguous(want, g), "version %d layer %d", n, l)
					}
				}
				concat := func(c transformer.Cache, l int, w *TransformerWrite) transformer.Cache {
					v, err := c.View(l)
					require.NoError(t, err)
					_, _, _, v, err = v.ConcatenateToCache(w.Key, w.Key, w.Value, w.Mask, w.Options)
					require.NoError(t, err)
					c, err = c.WithView(l, v)
					require.NoError(t, err)
					return c
				}
				check(0)

				// Version 1: a 3-token step.
				ws := layerWrites(trL, func() *TransformerWrite {
					return &TransformerWrite{Key: randTensor(r, trB, 3, trH, trD), Value: randTensor(r, trB, 3, trH, trD)}
				})
				step(t, c, 0, ws)
				next := ref
				for _, lw := range ws {
					next = concat(next, lw.Layer, lw.Write.(*TransformerWrite))
				}
				refs = append(refs, next)
				check(1)

				// Version 2: a 2-row prefill inserted into slots 1 and 2.
				pre := prefilled(t, r, 2, st, []int32{1, 0}, 4)
				v, err := c.Insert(ctx, 1, 1, pre)
				require.NoError(t, err)
				require.Equal(t, uint64(2), v)
				next, err = next.Insert(pre, 1)
				require.NoError(t, err)
				refs = append(refs, next)
				check(2)
				got, err := c.Snapshot(ctx, 2)
				require.NoError(t, err)
				for l := range trL {
					p, err := pre.View(l)
					require.NoError(t, err)
					g := layerView(t, got, l)
					rows := []sharding.Range{{Start: 1, End: 3}, {Start: 0, End: trS}, {Start: 0, End: trH}}
					for _, x := range []struct {
						what     string
						pre, got tensor.Tensor
					}{
						{"key codes", p.KeyCodes(), g.KeyCodes()}, {"key scales", p.KeyScales(), g.KeyScales()},
						{"value codes", p.ValueCodes(), g.ValueCodes()}, {"value scales", p.ValueScales(), g.ValueScales()},
					} {
						part, err := sharding.Extract(x.got, append(slices.Clone(rows), sharding.Range{Start: 0, End: x.got.Dim(3)}))
						require.NoError(t, err)
						require.NoError(t, sameVisible(x.what, x.pre, part, p.Index()), "layer %d: the inserted rows", l)
					}
				}

				// Version 3: a transaction writing layer 0 twice and layer 1 once.
				tx, err := c.Begin(ctx, 2)
				require.NoError(t, err)
				for _, l := range []int{0, 0, 1} {
					w := &TransformerWrite{Key: randTensor(r, trB, 1, trH, trD), Value: randTensor(r, trB, 1, trH, trD)}
					_, err := tx.WriteLayer(ctx, l, w)
					require.NoError(t, err)
					next = concat(next, l, w)
				}
				v, err = tx.Commit(ctx)
				require.NoError(t, err)
				require.Equal(t, uint64(3), v)
				refs = append(refs, next)
				check(3)
			})
		}
	}
}

// An insert of rows stored otherwise than the cache (another quantization,
// another NF4 block, or values into codes and back) is refused before
// anything is written, unsharded and sharded, with an error wrapping
// transformer.ErrIncompatible that names both storages; nothing is
// re-quantized and the cache stays at its version.
func TestQuantizedTransformerInsertStorageMismatch(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	bf16 := transformer.Storage{DType: tensor.BFloat16}
	int8 := transformer.Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}
	nf4 := transformer.Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 2}
	nf4b1 := transformer.Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 1}
	for _, tc := range []struct{ cache, rows transformer.Storage }{
		{int8, bf16}, {int8, nf4}, {nf4, nf4b1}, {bf16, int8}, {nf4, int8},
	} {
		for _, ms := range []struct{ dp, tp int }{{1, 1}, {2, 2}} {
			t.Run(fmt.Sprintf("%s into %s/dp=%d/tp=%d", tc.rows, tc.cache, ms.dp, ms.tp), func(t *testing.T) {
				spec := Spec{Transformer: &TransformerSpec{Metadata: quantMeta(t, trB), DType: tc.cache.DType,
					Quantization: tc.cache.Quantization, BlockSize: tc.cache.BlockSize}}
				mesh := testMesh(t, ms.dp, ms.tp)
				spec.Mesh, spec.PartitionAxis = &mesh, kvHeadsOverTP()
				c, err := rt.NewCache(fmt.Sprintf("mismatch %s %s %d %d", tc.cache, tc.rows, ms.dp, ms.tp), spec)
				require.NoError(t, err)
				defer func() { require.NoError(t, c.Close()) }()
				pre := prefilled(t, rand.New(rand.NewSource(22)), 2, tc.rows, nil, 2)
				msg := fmt.Sprintf("incompatible caches: insert of rows stored as %s into a layer stored as %s", tc.rows, tc.cache)
				_, err = c.Insert(ctx, 0, 1, pre)
				require.ErrorIs(t, err, ErrInvalid) // across actors only the code and message travel
				assert.Contains(t, err.Error(), msg)
				cur, err := c.Current(ctx)
				require.NoError(t, err)
				require.Equal(t, uint64(0), cur.Number, "a refused insert publishes nothing")

				// Called directly, the refusal wraps the core's sentinel.
				other, err := pre.View(0)
				require.NoError(t, err)
				w := &InsertWrite{Slot: 1, Other: other}
				if mesh.NumDevices() == 1 {
					_, _, err = Apply(cur.Views[0], w)
				} else {
					_, err = SplitWrite(w, cur.Views[0].(*Sharded))
				}
				require.ErrorIs(t, err, transformer.ErrIncompatible)
				assert.Contains(t, err.Error(), msg)
			})
		}
	}
}

// A head dim cut over tp (DecodeAttentionKVDimAxis): an NF4 cache whose
// block divides the shard's head dim cuts its codes and scales there, and
// a step and an insert leave it byte for byte as the core leaves an
// unsharded one; an int8 cache, one scale per row, cannot be cut there
// and NewCache refuses it naming the storage.
func TestQuantizedTransformerHeadDimCut(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	const d = 4
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: trB, SequenceLength: trS, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(2), HeadDim: transformer.Ptr(d)})
	require.NoError(t, err)
	pa := sharding.DefaultPartitionAxis()
	pa.DecodeAttentionKVDimAxis = sharding.MeshAxes{sharding.TP}
	mesh := testMesh(t, 2, 2)
	spec := func(st transformer.Storage) Spec {
		return Spec{Transformer: &TransformerSpec{Metadata: meta, DType: st.DType, Quantization: st.Quantization, BlockSize: st.BlockSize},
			Mesh: &mesh, PartitionAxis: &pa}
	}

	st := transformer.Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 2}
	c, err := rt.NewCache("nf4 dim cut", spec(st))
	require.NoError(t, err)
	part := mustCurrent(t, c).Views[0].(*Sharded).Parts()[0].(transformer.View)
	require.Equal(t, d/2, part.Metadata().KeyDim, "the head dim is cut in two")
	r := rand.New(rand.NewSource(23))
	w := &TransformerWrite{Key: randTensor(r, trB, 3, 2, d), Value: randTensor(r, trB, 3, 2, d)}
	step(t, c, 0, []LayerWrite{{Layer: 0, Write: w}})
	pm := meta
	pm.BatchSize = 2
	pre, err := transformer.InitStorage(pm, st, []int32{1, 0})
	require.NoError(t, err)
	pv, err := pre.View(0)
	require.NoError(t, err)
	pv, err = pv.Append(randTensor(r, 2, 4, 2, d), randTensor(r, 2, 4, 2, d))
	require.NoError(t, err)
	pre, err = pre.WithView(0, pv)
	require.NoError(t, err)
	_, err = c.Insert(ctx, 1, 1, pre)
	require.NoError(t, err)

	ref, err := transformer.InitStorage(meta, st, nil)
	require.NoError(t, err)
	rv, err := ref.View(0)
	require.NoError(t, err)
	_, _, _, rv, err = rv.ConcatenateToCache(w.Key, w.Key, w.Value, w.Mask, w.Options)
	require.NoError(t, err)
	ref, err = ref.WithView(0, rv)
	require.NoError(t, err)
	ref, err = ref.Insert(pre, 1)
	require.NoError(t, err)
	want, err := ref.View(0)
	require.NoError(t, err)
	require.NoError(t, sameContiguous(want, layerView(t, mustCurrent(t, c), 0)))

	_, err = rt.NewCache("int8 dim cut", spec(transformer.Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}))
	require.ErrorIs(t, err, transformer.ErrSharding)
	assert.Contains(t, err.Error(), "stored as bfloat16 8BIT")
}

// mustCurrent returns c's current version.
func mustCurrent(t *testing.T, c *Cache) Version {
	t.Helper()
	v, err := c.Current(context.Background())
	require.NoError(t, err)
	return v
}
