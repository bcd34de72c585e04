package actors

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// meshShapes are the (dp, tp) shapes every sharded test runs on.
var meshShapes = []struct{ dp, tp int }{{1, 1}, {1, 2}, {1, 4}, {2, 1}, {2, 2}, {2, 4}}

// testMesh returns a dp×tp mesh with an fsdp axis of size 1: eformer's
// default batch rule ("fsdp", "dp") shards the batch only when both axes
// are in the mesh (Correct drops an entry naming a missing axis).
func testMesh(t testing.TB, dp, tp int) sharding.Mesh {
	t.Helper()
	m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.DP: dp, sharding.FSDP: 1, sharding.TP: tp},
		Devices: sharding.UniformDevices(dp*tp, 1<<30)})
	require.NoError(t, err)
	return m
}

// kvHeadsOverTP is the default PartitionAxis with a contiguous cache's kv
// heads over tp (eformer v0.0.38 leaves them replicated).
func kvHeadsOverTP() *sharding.PartitionAxis {
	pa := sharding.DefaultPartitionAxis()
	pa.KVHeadAxis = sharding.MeshAxes{sharding.TP}
	pa.DecodeKVHeadAxis = sharding.MeshAxes{sharding.TP}
	return &pa
}

func mustMask(m transformer.Mask, err error) transformer.Mask {
	if err != nil {
		panic(err)
	}
	return m
}

// kindCase is one cache kind driven through the runtime: spec builds the
// unsharded spec, drive runs the same steps on any cache built from it
// (asserting each succeeds) and returns the results of every step, and
// same requires two full views to hold the same bytes.
type kindCase struct {
	name  string
	spec  func(t *testing.T) Spec
	pa    *sharding.PartitionAxis
	drive func(t *testing.T, c *Cache) [][]Result
	same  func(t *testing.T, want, got any)
}

// step runs one step on base and requires it to publish base+1.
func step(t *testing.T, c *Cache, base uint64, ws []LayerWrite) []Result {
	t.Helper()
	v, res, err := c.Step(context.Background(), base, ws)
	require.NoError(t, err)
	require.Equal(t, base+1, v)
	return res
}

// Transformer: B 4, S 8, 4 kv heads of dim 2, 2 layers, a bfloat16 cache
// fed float32 inputs.
const trB, trS, trH, trD, trL = 4, 8, 4, 2, 2

func transformerCase() kindCase { return transformerCaseStorage("transformer", tensor.None, 0) }

// transformerCaseStorage is transformerCase with keys and values stored
// quantized as q (NF4 with block) and the given case name: the inserted
// prefill is stored alike, part views hold their rows' and kv heads'
// codes and scales, and must join into the unsharded codes and scales byte
// for byte.
func transformerCaseStorage(name string, q tensor.Quantization, block int) kindCase {
	st := transformer.Storage{DType: tensor.BFloat16, Quantization: q, BlockSize: block}
	meta := func(t *testing.T, b int) transformer.Metadata {
		m, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: b, SequenceLength: trS, NumHiddenLayers: trL,
			NumHeads: transformer.Ptr(trH), HeadDim: transformer.Ptr(trD)})
		require.NoError(t, err)
		return m
	}
	writes := func(r *rand.Rand, q int, masked bool) []LayerWrite {
		return layerWrites(trL, func() *TransformerWrite {
			w := &TransformerWrite{Key: randTensor(r, trB, q, trH, trD), Value: randTensor(r, trB, q, trH, trD)}
			if masked {
				// A query with 2 query heads per kv head (its heads are never cut),
				// an attention mask with holes and a causal mask shared by every row.
				w.Query = randTensor(r, trB, q, 2*trH, 3)
				data := make([]bool, trB*trS)
				for i := range data {
					data[i] = r.Intn(4) != 0
				}
				w.Mask = mustMask(transformer.NewMask([]int{trB, trS}, data))
				w.Options = transformer.ConcatOptions{CausalMask: transformer.CausalMask(trS)}
			}
			return w
		})
	}
	return kindCase{
		name: name,
		pa:   kvHeadsOverTP(),
		spec: func(t *testing.T) Spec {
			return Spec{Transformer: &TransformerSpec{Metadata: meta(t, trB), DType: st.DType, Quantization: q, BlockSize: block,
				Starts: []int32{0, 1, 0, 2}}}
		},
		drive: func(t *testing.T, c *Cache) [][]Result {
			ctx := context.Background()
			r := rand.New(rand.NewSource(7))
			var out [][]Result
			out = append(out, step(t, c, 0, writes(r, 3, true))) // a prefill chunk: version 1
			out = append(out, step(t, c, 1, writes(r, 1, false)))
			out = append(out, step(t, c, 2, writes(r, 1, true)))

			// Insert a 2-row prefill into slots 1 and 2 (the rows straddle the
			// dp shards when dp is 2): version 4.
			pre, err := transformer.InitStorage(meta(t, 2), st, []int32{1, 0})
			require.NoError(t, err)
			for l := range trL {
				v, err := pre.View(l)
				require.NoError(t, err)
				v, err = v.Append(randTensor(r, 2, 3, trH, trD), randTensor(r, 2, 3, trH, trD))
				require.NoError(t, err)
				pre, err = pre.WithView(l, v)
				require.NoError(t, err)
			}
			v, err := c.Insert(ctx, 3, 1, pre)
			require.NoError(t, err)
			require.Equal(t, uint64(4), v)

			// A transaction writing layer 0 twice and layer 1 once: version 5.
			tx, err := c.Begin(ctx, 4)
			require.NoError(t, err)
			var res []Result
			for _, lw := range []LayerWrite{writes(r, 1, false)[0], writes(r, 1, true)[0], writes(r, 1, false)[1]} {
				x, err := tx.WriteLayer(ctx, lw.Layer, lw.Write)
				require.NoError(t, err)
				res = append(res, x)
			}
			out = append(out, res)
			v, err = tx.Commit(ctx)
			require.NoError(t, err)
			require.Equal(t, uint64(5), v)
			return out
		},
		same: requireSame(sameContiguous),
	}
}

// Paged: 2 slots, 4 kv heads of dim 2, pages of 4 tokens.
func pagedCase() kindCase { return pagedCaseStorage("paged", tensor.None, 0) }

// pagedCaseStorage is pagedCase with the pages stored quantized as q (NF4
// with block) and the given case name: part views hold their kv heads'
// codes and scales, and must join into the unsharded codes and scales
// byte for byte.
func pagedCaseStorage(name string, q tensor.Quantization, block int) kindCase {
	const hkv, d = 4, 2
	tokens := func(r *rand.Rand, n int) (tensor.Tensor, tensor.Tensor) {
		return randTensor(r, n, hkv, d), randTensor(r, n, hkv, d)
	}
	return kindCase{
		name: name,
		spec: func(t *testing.T) Spec {
			meta := paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
				PageSize: 4, NumKVHeads: hkv, KVHeadDimSize: d, HBMUtilization: 0.5}
			return Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.BFloat16, Quantization: q, BlockSize: block}}
		},
		drive: func(t *testing.T, c *Cache) [][]Result {
			r := rand.New(rand.NewSource(8))
			each := func(w func() *PagedWrite) []LayerWrite { return layerWrites(2, w) }
			var out [][]Result
			// Sequence A's prompt of 6 tokens in pages 1, 2.
			out = append(out, step(t, c, 0, each(func() *PagedWrite {
				k, v := tokens(r, 6)
				return &PagedWrite{PrefillKey: k, PrefillValue: v, Step: paged.StepMetadata{PrefillLength: 6, PrefillPageTable: []int32{1, 2}}}
			})))
			// Mixed: sequence B's first 3 tokens in pages 3, 4; A decodes at 6;
			// slot 1 is inactive.
			out = append(out, step(t, c, 1, each(func() *PagedWrite {
				pk, pv := tokens(r, 3)
				dk, dv := tokens(r, 2)
				return &PagedWrite{PrefillKey: pk, PrefillValue: pv, DecodeKey: dk, DecodeValue: dv, Step: paged.StepMetadata{
					PrefillLength: 3, PrefillPageTable: []int32{3, 4},
					DecodesPosition: []int32{6, -1}, DecodesPageTable: [][]int32{{1, 2, 0, 0}, {0, 0, 0, 0}}}}
			})))
			// Both decode.
			out = append(out, step(t, c, 2, each(func() *PagedWrite {
				dk, dv := tokens(r, 2)
				return &PagedWrite{DecodeKey: dk, DecodeValue: dv, Step: paged.StepMetadata{
					DecodesPosition: []int32{7, 3}, DecodesPageTable: [][]int32{{1, 2, 0, 0}, {3, 4, 0, 0}}}}
			})))
			return out
		},
		same: func(t *testing.T, want, got any) {
			w, g := want.(paged.View), got.(paged.View)
			require.Equal(t, w.Storage(), g.Storage())
			require.True(t, w.KeyPages().Equal(g.KeyPages()), "key pages")
			require.True(t, w.ValuePages().Equal(g.ValuePages()), "value pages")
			if w.IsQuantized() {
				require.True(t, w.KeyCodes().Equal(g.KeyCodes()), "key codes")
				require.True(t, w.KeyScales().Equal(g.KeyScales()), "key scales")
				require.True(t, w.ValueCodes().Equal(g.ValueCodes()), "value codes")
				require.True(t, w.ValueScales().Equal(g.ValueScales()), "value scales")
			}
			require.Equal(t, w.Metadata(), g.Metadata())
		},
	}
}

// Mamba: B 4, intermediate 8, state 3, kernel 4.
func mambaCase() kindCase {
	const b, i, n, k = 4, 8, 3, 4
	return kindCase{
		name: "mamba",
		spec: func(t *testing.T) Spec {
			meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: b, IntermediateSize: i, SSMStateSize: n, ConvKernelSize: k})
			require.NoError(t, err)
			return Spec{Mamba: &MambaSpec{Metadata: meta, DType: tensor.Float32}}
		},
		drive: func(t *testing.T, c *Cache) [][]Result {
			r := rand.New(rand.NewSource(9))
			each := func(w func() ConvSSM) []LayerWrite {
				return layerWrites(2, func() *MambaWrite { return &MambaWrite{w()} })
			}
			var out [][]Result
			out = append(out, step(t, c, 0, each(func() ConvSSM {
				return ConvSSM{ConvWindow: randTensor(r, b, i, k), SSMState: randTensor(r, b, i, n)}
			})))
			out = append(out, step(t, c, 1, each(func() ConvSSM {
				return ConvSSM{ConvColumn: randTensor(r, b, i), CachePosition: k - 1, SSMState: randTensor(r, b, i, n)}
			})))
			out = append(out, step(t, c, 2, each(func() ConvSSM { return ConvSSM{ConvColumn: randTensor(r, b, i), CachePosition: 1} })))
			return out
		},
		same: requireSame(sameMamba),
	}
}

// Mamba2: B 4, intermediate 8, 4 heads of dim 2, state 2, 4 groups (conv_dim
// 24, which tp 4 cuts into blocks dividing both intermediate and groups).
func mamba2Case() kindCase {
	const b, i, h, p, n, k, g = 4, 8, 4, 2, 2, 4, 4
	const conv = i + 2*g*n
	return kindCase{
		name: "mamba2",
		spec: func(t *testing.T) Spec {
			meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 2, BatchSize: b, IntermediateSize: i, NumHeads: h,
				HeadDim: p, StateSize: n, ConvKernelSize: k, NGroups: g})
			require.NoError(t, err)
			return Spec{Mamba2: &Mamba2Spec{Metadata: meta, DType: tensor.BFloat16}}
		},
		drive: func(t *testing.T, c *Cache) [][]Result {
			r := rand.New(rand.NewSource(10))
			each := func(w func() *Mamba2Write) []LayerWrite { return layerWrites(2, w) }
			var out [][]Result
			out = append(out, step(t, c, 0, each(func() *Mamba2Write {
				return &Mamba2Write{ConvSSM: ConvSSM{ConvWindow: randTensor(r, b, conv, k), SSMState: randTensor(r, b, h, p, n)}, AdvanceSeq: 5}
			})))
			out = append(out, step(t, c, 1, each(func() *Mamba2Write {
				return &Mamba2Write{ConvSSM: ConvSSM{ConvColumn: randTensor(r, b, conv), CachePosition: k - 1, SSMState: randTensor(r, b, h, p, n)}, AdvanceSeq: 1}
			})))
			out = append(out, step(t, c, 2, each(func() *Mamba2Write {
				return &Mamba2Write{ConvSSM: ConvSSM{ConvColumn: randTensor(r, b, conv), CachePosition: k - 1}, AdvanceSeq: 1}
			})))
			return out
		},
		same: requireSame(sameMamba2),
	}
}

// Lightning: B 4, 4 heads, Dk 2, Dv 3.
func lightningCase() kindCase {
	const b, h, dk, dv = 4, 4, 2, 3
	slopes := []float64{0.5, 0.25, 0.125, 0.0625}
	return kindCase{
		name: "lightning",
		spec: func(t *testing.T) Spec {
			meta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: lightning.Ptr(b), NumHeads: lightning.Ptr(h),
				KeyDim: lightning.Ptr(dk), ValueDim: lightning.Ptr(dv)})
			require.NoError(t, err)
			return Spec{Lightning: &LightningSpec{Layers: 2, Metadata: meta, DType: tensor.Float32}}
		},
		drive: func(t *testing.T, c *Cache) [][]Result {
			r := rand.New(rand.NewSource(11))
			each := func(w func() *LightningWrite) []LayerWrite { return layerWrites(2, w) }
			update := func(tokens int) func() *LightningWrite {
				return func() *LightningWrite {
					return &LightningWrite{Key: randTensor(r, b, h, tokens, dk), Value: randTensor(r, b, h, tokens, dv), SlopeRate: slopes}
				}
			}
			var out [][]Result
			out = append(out, step(t, c, 0, each(update(3))))
			out = append(out, step(t, c, 1, each(update(1))))
			out = append(out, step(t, c, 2, each(func() *LightningWrite { return &LightningWrite{KeyValue: randTensor(r, b, h, dk, dv)} })))
			out = append(out, step(t, c, 3, each(update(1))))
			return out
		},
		same: requireSame(sameLightning),
	}
}

func kindCases() []kindCase {
	return []kindCase{transformerCase(), transformerCaseStorage("transformer/int8", tensor.Int8, 0),
		transformerCaseStorage("transformer/nf4", tensor.NF4, 2), pagedCase(), pagedCaseStorage("paged/int8", tensor.Int8, 0),
		pagedCaseStorage("paged/nf4", tensor.NF4, 2), mambaCase(), mamba2Case(), lightningCase()}
}

// TestShardedStepsEqualUnsharded drives a sharded cache of every kind and
// an unsharded one through the same steps (for a contiguous cache also an
// insert and a transaction) and requires every kept version's layers,
// joined, to hold exactly the unsharded bytes, for tp in {1, 2, 4} and dp
// in {1, 2}.
func TestShardedStepsEqualUnsharded(t *testing.T) {
	for _, kc := range kindCases() {
		t.Run(kc.name, func(t *testing.T) {
			rt := newRuntime(t)
			ref, err := rt.NewCache(kc.name+"-ref", kc.spec(t))
			require.NoError(t, err)
			wantResults := kc.drive(t, ref)
			want, err := ref.Current(context.Background())
			require.NoError(t, err)
			for _, ms := range meshShapes {
				t.Run(fmt.Sprintf("dp=%d/tp=%d", ms.dp, ms.tp), func(t *testing.T) {
					ctx := context.Background()
					mesh := testMesh(t, ms.dp, ms.tp)
					spec := kc.spec(t)
					spec.Mesh, spec.PartitionAxis = &mesh, kc.pa
					c, err := rt.NewCache(fmt.Sprintf("%s-%d-%d", kc.name, ms.dp, ms.tp), spec)
					require.NoError(t, err)
					defer func() { require.NoError(t, c.Close()) }()
					results := kc.drive(t, c)
					cur, err := c.Current(ctx)
					require.NoError(t, err)
					require.Equal(t, want.Number, cur.Number)
					for n := uint64(0); n <= cur.Number; n++ {
						w, err := ref.Snapshot(ctx, n)
						require.NoError(t, err)
						g, err := c.Snapshot(ctx, n)
						require.NoError(t, err)
						for l := range w.Views {
							_, isSharded := g.Views[l].(*Sharded)
							require.Equal(t, mesh.NumDevices() > 1, isSharded, "version %d layer %d is a %T", n, l, g.Views[l])
							wl, err := w.Layer(l)
							require.NoError(t, err)
							gl, err := g.Layer(l)
							require.NoError(t, err)
							t.Run(fmt.Sprintf("version %d layer %d", n, l), func(t *testing.T) { kc.same(t, wl, gl) })
						}
					}
					checkResults(t, mesh, wantResults, results)
				})
			}
		})
	}
}

// checkResults requires a sharded cache's step results to carry one part
// per device and zero full tensors, and (for contiguous caches) the parts'
// keys and values to join into the unsharded results'.
func checkResults(t *testing.T, mesh sharding.Mesh, want, got [][]Result) {
	require.Len(t, got, len(want))
	for s := range want {
		require.Len(t, got[s], len(want[s]))
		for i, w := range want[s] {
			g := got[s][i]
			if mesh.NumDevices() == 1 {
				assert.Empty(t, g.Parts)
				assert.True(t, w.Key.Equal(g.Key))
				continue
			}
			require.Len(t, g.Parts, mesh.NumDevices(), "step %d write %d", s, i)
			assert.True(t, g.Key.IsZero() && g.Value.IsZero() && g.Mask.IsZero(), "a sharded result leaves the full tensors zero")
			if w.Key.IsZero() {
				continue
			}
			keys, values := make([]tensor.Tensor, len(g.Parts)), make([]tensor.Tensor, len(g.Parts))
			for d, p := range g.Parts {
				keys[d], values[d] = p.Key, p.Value
			}
			// The key parts are cut as the cache's: batch over (fsdp, dp), kv heads
			// over tp (kvHeadsOverTP).
			spec := sharding.Correct(sharding.Spec{{sharding.FSDP, sharding.DP}, nil, {sharding.TP}, nil}, w.Key.Shape(), mesh)
			k, err := sharding.Join(keys, spec, mesh, w.Key.Shape())
			require.NoError(t, err)
			v, err := sharding.Join(values, spec, mesh, w.Value.Shape())
			require.NoError(t, err)
			assert.True(t, w.Key.Equal(k), "step %d write %d: joined key", s, i)
			assert.True(t, w.Value.Equal(v), "step %d write %d: joined value", s, i)
			// Each device's mask is the full mask's rows of that device.
			rows := sharding.Correct(sharding.Spec{{sharding.FSDP, sharding.DP}}, []int{trB}, mesh)
			slices, err := sharding.ShardSlices([]int{trB}, rows, mesh)
			require.NoError(t, err)
			per := len(w.Mask.Data) / trB
			for d, p := range g.Parts {
				r := slices[d].Ranges[0]
				assert.Equal(t, w.Mask.Data[r.Start*per:r.End*per], p.Mask.Data, "step %d write %d device %d: mask rows %v", s, i, d, r)
			}
		}
	}
}

// panicShard is inner, except that device's part write panics, as a bug in
// one shard actor would.
type panicShard struct {
	inner  Write
	device int
}

func (w panicShard) apply(view any) (any, Result, error) { return w.inner.apply(view) }

func (w panicShard) split(base *Sharded) ([]Write, error) {
	parts, err := w.inner.split(base)
	if err != nil {
		return nil, err
	}
	parts[w.device] = panicWrite{}
	return parts, nil
}

// decodeWrites returns one random decode write per layer of a transformerCase
// cache.
func decodeWrites(r *rand.Rand) []LayerWrite {
	return layerWrites(trL, func() *TransformerWrite {
		return &TransformerWrite{Key: randTensor(r, trB, 1, trH, trD), Value: randTensor(r, trB, 1, trH, trD)}
	})
}

// shardedPair returns an unsharded transformerCase cache and the same cache
// on a dp×tp mesh.
func shardedPair(t *testing.T, rt *Runtime, dp, tp int) (ref, c *Cache) {
	kc := transformerCase()
	ref, err := rt.NewCache("ref", kc.spec(t))
	require.NoError(t, err)
	mesh := testMesh(t, dp, tp)
	spec := kc.spec(t)
	spec.Mesh, spec.PartitionAxis = &mesh, kc.pa
	c, err = rt.NewCache("sharded", spec)
	require.NoError(t, err)
	return ref, c
}

// requireSameVersion requires version n of c, joined, to equal version n
// of ref.
func requireSameVersion(t *testing.T, ref, c *Cache, n uint64) {
	t.Helper()
	ctx := context.Background()
	w, err := ref.Snapshot(ctx, n)
	require.NoError(t, err)
	g, err := c.Snapshot(ctx, n)
	require.NoError(t, err)
	for l := range w.Views {
		wl, err := w.Layer(l)
		require.NoError(t, err)
		gl, err := g.Layer(l)
		require.NoError(t, err)
		transformerCase().same(t, wl, gl)
	}
}

func TestShardPanicFailsTheStepAndKeepsCommittedData(t *testing.T) {
	rt := newRuntime(t)
	ref, c := shardedPair(t, rt, 2, 2)
	ctx := context.Background()
	r := rand.New(rand.NewSource(12))
	first := decodeWrites(r)
	step(t, ref, 0, first)
	step(t, c, 0, first)

	// Device 2's shard actor of layer 1 panics in the middle of step 2.
	next := decodeWrites(r)
	bad := append([]LayerWrite(nil), next...)
	bad[1].Write = panicShard{inner: next[1].Write, device: 2}
	_, _, err := c.Step(ctx, 1, bad)
	require.ErrorIs(t, err, ErrInternal)
	assert.Contains(t, err.Error(), "layer 1: the shard actor of device 2 panicked: boom")
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), cur.Number, "version 1 stays current")
	requireSameVersion(t, ref, c, 0)
	requireSameVersion(t, ref, c, 1)

	// The restarted shard actor takes the next step, on the same base.
	step(t, ref, 1, next)
	step(t, c, 1, next)
	requireSameVersion(t, ref, c, 1)
	requireSameVersion(t, ref, c, 2)

	// A panic in the layer actor itself (while splitting) restarts it and
	// its shard actors; the step fails and the next one works.
	bad = decodeWrites(r)
	bad[0].Write = panicWrite{}
	_, _, err = c.Step(ctx, 2, bad)
	require.ErrorIs(t, err, ErrInternal)
	assert.Contains(t, err.Error(), "layer 0 panicked: boom in split; version 2 is still current")
	more := decodeWrites(r)
	step(t, ref, 2, more)
	step(t, c, 2, more)
	for n := range uint64(4) {
		requireSameVersion(t, ref, c, n)
	}
}

func TestShardedStaleBaseIsRejected(t *testing.T) {
	rt := newRuntime(t)
	_, c := shardedPair(t, rt, 2, 2)
	ctx := context.Background()
	r := rand.New(rand.NewSource(13))
	step(t, c, 0, decodeWrites(r))
	_, _, err := c.Step(ctx, 0, decodeWrites(r))
	require.ErrorIs(t, err, ErrStale)

	// Concurrent steps on one base: exactly one wins, nothing is merged.
	racing := make([][]LayerWrite, 6)
	for i := range racing {
		racing[i] = decodeWrites(r)
	}
	requireOneWins(t, c, 1, racing)
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(2), cur.Number)
	for l := range trL {
		v, err := cur.Layer(l)
		require.NoError(t, err)
		assert.Equal(t, []int32{2, 2, 2, 2}, v.(transformer.View).Index(), "layer %d: exactly two writes, none merged", l)
	}
}

func TestShardedWriteErrors(t *testing.T) {
	rt := newRuntime(t)
	_, c := shardedPair(t, rt, 2, 2)
	ctx := context.Background()
	r := rand.New(rand.NewSource(14))
	ws := decodeWrites(r)
	ws[1].Write = &TransformerWrite{Key: randTensor(r, trB, 1, trH+1, trD), Value: randTensor(r, trB, 1, trH+1, trD)}
	_, _, err := c.Step(ctx, 0, ws)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "layer 1")
	_, _, err = c.Step(ctx, 0, []LayerWrite{{Layer: 0, Write: &PagedWrite{}}})
	require.ErrorIs(t, err, ErrKind)
	// A row past its capacity fails in the shard that holds it.
	ws = decodeWrites(r)
	ws[0].Write = &TransformerWrite{Key: randTensor(r, trB, trS+1, trH, trD), Value: randTensor(r, trB, trS+1, trH, trD)}
	_, _, err = c.Step(ctx, 0, ws)
	require.ErrorIs(t, err, transformer.ErrOverflow)
	assert.Contains(t, err.Error(), "layer 0, device")
	// An insert whose rows do not fit the batch.
	pre, err := transformer.Init(transformerCase().spec(t).Transformer.Metadata, tensor.BFloat16, nil)
	require.NoError(t, err)
	_, err = c.Insert(ctx, 0, 1, pre)
	require.ErrorIs(t, err, transformer.ErrOutOfRange)
	assert.Contains(t, err.Error(), "slot 1 with 4 rows")
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), cur.Number)

	_, err = cur.Layer(trL)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "layer 2 out of range (version 0 has 2 layers)")
}

func TestShardedSpecErrors(t *testing.T) {
	rt := newRuntime(t)
	spec := transformerCase().spec(t)
	mesh := testMesh(t, 2, 1)
	for _, tc := range []struct {
		name string
		edit func(s *Spec)
		want string
	}{
		{"unknown mode", func(s *Spec) { s.Mesh, s.Mode = &mesh, "__sideways__" }, `unknown mode "__sideways__"`},
		{"zero mesh", func(s *Spec) { s.Mesh = &sharding.Mesh{} }, "the zero Mesh has no devices"},
		{"bad partition axis", func(s *Spec) {
			pa := sharding.DefaultPartitionAxis()
			pa.TensorParallelAxis = ""
			s.Mesh, s.PartitionAxis = &mesh, &pa
		}, "partition axis"},
		{"kv length over sp", func(s *Spec) {
			sp, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.SP: 2}, Devices: sharding.UniformDevices(2, 1<<30)})
			require.NoError(t, err)
			s.Mesh = &sp
		}, "cuts the kv length axis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec
			tc.edit(&s)
			_, err := rt.NewCache(tc.name, s)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// Readers of a sharded cache see whole versions: every layer of a version
// joins to the same index.
func TestShardedReadersSeeWholeVersions(t *testing.T) {
	rt := newRuntime(t)
	_, c := shardedPair(t, rt, 2, 2)
	ctx := context.Background()
	r := rand.New(rand.NewSource(15))
	const steps = 5
	done := make(chan error)
	go func() {
		for {
			v, err := c.Current(ctx)
			if err != nil {
				done <- err
				return
			}
			var idx []int32
			for l := range trL {
				full, err := v.Layer(l)
				if err != nil {
					done <- err
					return
				}
				got := full.(transformer.View).Index()
				if l == 0 {
					idx = got
				} else if !assert.Equal(t, idx, got, "version %d layer %d", v.Number, l) {
					done <- nil
					return
				}
			}
			if v.Number == steps {
				done <- nil
				return
			}
		}
	}()
	for s := range uint64(steps) {
		step(t, c, s, decodeWrites(r))
	}
	require.NoError(t, <-done)
}

// Gather reads a sharded paged layer's sequences exactly as the unsharded
// view's Gather does, and only their tokens: a reader gathering sequence
// A's prompt while later steps write the pools (in place, past the
// prompt) sees the same bytes throughout, with no data race.
func TestShardedPagedGather(t *testing.T) {
	kc := pagedCase()
	rt := newRuntime(t)
	ref, err := rt.NewCache("ref", kc.spec(t))
	require.NoError(t, err)
	kc.drive(t, ref)
	ctx := context.Background()
	refAt := func(n uint64, l int) paged.View {
		v, err := ref.Snapshot(ctx, n)
		require.NoError(t, err)
		return v.Views[l].(paged.View)
	}
	wantK, wantV, err := refAt(1, 0).Gather([]int32{1, 2}, 6)
	require.NoError(t, err)

	for _, ms := range []struct{ dp, tp int }{{1, 4}, {2, 2}} {
		t.Run(fmt.Sprintf("dp=%d/tp=%d", ms.dp, ms.tp), func(t *testing.T) {
			mesh := testMesh(t, ms.dp, ms.tp)
			spec := kc.spec(t)
			spec.Mesh = &mesh
			c, err := rt.NewCache(fmt.Sprintf("paged-%d-%d", ms.dp, ms.tp), spec)
			require.NoError(t, err)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					v, err := c.Current(ctx)
					if !assert.NoError(t, err) {
						return
					}
					if v.Number >= 1 {
						k, val, err := v.Views[0].(*Sharded).Gather([]int32{1, 2}, 6)
						if !assert.NoError(t, err) || !assert.True(t, wantK.Equal(k) && wantV.Equal(val), "version %d: sequence A's prompt", v.Number) {
							return
						}
					}
					if v.Number == 3 {
						return
					}
				}
			}()
			kc.drive(t, c)
			<-done
			cur, err := c.Current(ctx)
			require.NoError(t, err)
			for _, seq := range []struct {
				table  []int32
				length int
			}{{[]int32{1, 2, 0, 0}, 8}, {[]int32{3, 4, 0, 0}, 4}} {
				wk, wv, err := refAt(3, 1).Gather(seq.table, seq.length)
				require.NoError(t, err)
				k, v, err := cur.Views[1].(*Sharded).Gather(seq.table, seq.length)
				require.NoError(t, err)
				assert.True(t, wk.Equal(k), "keys of sequence %v", seq.table)
				assert.True(t, wv.Equal(v), "values of sequence %v", seq.table)
			}
			_, _, err = cur.Views[0].(*Sharded).Gather([]int32{9}, 1)
			require.Error(t, err, "page 9 is outside the pool")
		})
	}

	_, c := shardedPair(t, newRuntime(t), 2, 2)
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	_, _, err = cur.Views[0].(*Sharded).Gather([]int32{1}, 1)
	require.ErrorIs(t, err, ErrKind)
}

// Joining the layers of a contiguous, Mamba, Mamba2 or lightning cache
// while steps run reads only bytes no step changes: under -race this
// fails if a join reads storage a step is writing in place. (A paged
// layer's join reads whole pools: see TestShardedPagedGather.)
func TestShardedJoinDuringSteps(t *testing.T) {
	for _, kc := range kindCases() {
		if strings.HasPrefix(kc.name, "paged") {
			continue
		}
		t.Run(kc.name, func(t *testing.T) {
			mesh := testMesh(t, 2, 2)
			spec := kc.spec(t)
			spec.Mesh, spec.PartitionAxis = &mesh, kc.pa
			c, err := newRuntime(t).NewCache(kc.name, spec)
			require.NoError(t, err)
			ctx := context.Background()
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					v, err := c.Current(ctx)
					if !assert.NoError(t, err) {
						return
					}
					for l := range v.Views {
						if _, err := v.Layer(l); !assert.NoError(t, err) {
							return
						}
					}
				}
			}()
			kc.drive(t, c)
			close(stop)
			<-done
		})
	}
}

// A PagedStoredWrite of int8 or NF4 rows into a sharded cache of the same
// storage is cut by kv heads, codes and scales alike (paged.Specs.SplitStored),
// and leaves every layer byte for byte as the same write leaves an
// unsharded cache; rows of another storage are refused before they are
// cut, naming both storages.
func TestShardedQuantizedPagedStoredWrite(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	meta := storedTestMeta()
	for _, st := range []paged.Storage{
		{DType: tensor.BFloat16, Quantization: tensor.Int8},
		{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 4},
	} {
		t.Run(st.String(), func(t *testing.T) {
			spec := Spec{Paged: &PagedSpec{Metadata: meta, DType: st.DType, Quantization: st.Quantization, BlockSize: st.BlockSize}}
			src, err := rt.NewCache("stored src "+st.String(), spec)
			require.NoError(t, err)
			sv := prefillLayers(t, src, 0, []int32{5, 2}, 7, 1)
			ref, err := rt.NewCache("stored ref "+st.String(), spec)
			require.NoError(t, err)
			mesh := testMesh(t, 2, 2)
			spec.Mesh = &mesh
			c, err := rt.NewCache("stored sharded "+st.String(), spec)
			require.NoError(t, err)
			ws := make([]LayerWrite, meta.NumHiddenLayers)
			for l := range ws {
				rows, err := sv.Views[l].(paged.View).GatherStored([]int32{5, 2}, 7)
				require.NoError(t, err)
				ws[l] = LayerWrite{Layer: l, Write: &PagedStoredWrite{Rows: rows, Step: paged.StepMetadata{PrefillLength: 7, PrefillPageTable: []int32{7, 3}}}}
			}
			step(t, ref, 0, ws)
			step(t, c, 0, ws)
			want, err := ref.Current(ctx)
			require.NoError(t, err)
			got, err := c.Current(ctx)
			require.NoError(t, err)
			same := pagedCase().same
			for l := range meta.NumHiddenLayers {
				require.IsType(t, &Sharded{}, got.Views[l])
				gl, err := got.Layer(l)
				require.NoError(t, err)
				same(t, want.Views[l], gl)
			}

			layouts, err := spec.ShardedViews()
			require.NoError(t, err)
			rows, err := sv.Views[0].(paged.View).GatherStored([]int32{5, 2}, 7)
			require.NoError(t, err)
			rows.Storage = paged.Storage{DType: st.DType}
			_, err = SplitWrite(&PagedStoredWrite{Rows: rows, Step: paged.StepMetadata{PrefillLength: 7, PrefillPageTable: []int32{7, 3}}}, layouts[0])
			require.ErrorIs(t, err, paged.ErrStorageMismatch)
			assert.Contains(t, err.Error(), fmt.Sprintf("rows stored as %s into a view stored as %s", st.DType, st.Resolved()))
		})
	}
}
