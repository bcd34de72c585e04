//go:build !race

package cluster_test

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// randTensor returns a tensor of dt and shape holding standard normal
// values drawn from r.
func randTensor(r *rand.Rand, dt tensor.DType, shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64()
	}
	return tensor.Must(tensor.FromFloat64s(dt, v, shape...))
}

// dp2tp2 is a dp 2 x tp 2 mesh (with an fsdp axis of 1) of 1 GiB devices.
func dp2tp2(t *testing.T) sharding.Mesh {
	t.Helper()
	m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.DP: 2, sharding.FSDP: 1, sharding.TP: 2},
		Devices: sharding.UniformDevices(4, 1<<30)})
	require.NoError(t, err)
	return m
}

// kindCase is a cache of one kind and the writes of each of its steps
// (built from the version-0 views, for their shapes).
type kindCase struct {
	name   string
	spec   actors.Spec
	writes func(r *rand.Rand, step int, v0 []any) []actors.LayerWrite
}

func kindCases(t *testing.T) []kindCase {
	tm, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 2, SequenceLength: 12, NumHiddenLayers: 2,
		NumHeads: transformer.Ptr(2), HeadDim: transformer.Ptr(4)})
	require.NoError(t, err)
	pm := paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 8, MaxSequences: 32,
		PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 4, HBMUtilization: 0.5}
	m2, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 8, NumHeads: 2, HeadDim: 4,
		StateSize: 3, ConvKernelSize: 3, NGroups: 2})
	require.NoError(t, err)
	two, four := 2, 4
	lm, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: &two, NumHeads: &two, HeadDim: &four})
	require.NoError(t, err)
	table := []int32{1, 2, 3, 0, 0, 0, 0, 0}
	return []kindCase{
		{"transformer", actors.Spec{Transformer: &actors.TransformerSpec{Metadata: tm, DType: tensor.BFloat16}},
			func(r *rand.Rand, step int, _ []any) []actors.LayerWrite {
				q := 1
				if step == 0 {
					q = 3 // a prefill chunk, then decodes
				}
				var ws []actors.LayerWrite
				for l := range 2 {
					k, v := randTensor(r, tensor.BFloat16, 2, q, 2, 4), randTensor(r, tensor.BFloat16, 2, q, 2, 4)
					ws = append(ws, actors.LayerWrite{Layer: l, Write: &actors.TransformerWrite{Key: k, Value: v}})
				}
				return ws
			}},
		{"paged", actors.Spec{Paged: &actors.PagedSpec{Metadata: pm, DType: tensor.Float32}},
			func(r *rand.Rand, step int, _ []any) []actors.LayerWrite {
				var ws []actors.LayerWrite
				for l := range 2 {
					w := &actors.PagedWrite{}
					if step == 0 {
						w.PrefillKey, w.PrefillValue = randTensor(r, tensor.Float32, 6, 2, 4), randTensor(r, tensor.Float32, 6, 2, 4)
						w.Step = paged.StepMetadata{PrefillLength: 6, PrefillPageTable: table}
					} else {
						w.DecodeKey, w.DecodeValue = randTensor(r, tensor.Float32, 1, 2, 4), randTensor(r, tensor.Float32, 1, 2, 4)
						w.Step = paged.StepMetadata{DecodesPosition: []int32{int32(5 + step)}, DecodesPageTable: [][]int32{table}}
					}
					ws = append(ws, actors.LayerWrite{Layer: l, Write: w})
				}
				return ws
			}},
		{"mamba2", actors.Spec{Mamba2: &actors.Mamba2Spec{Metadata: m2, DType: tensor.Float32}},
			func(r *rand.Rand, step int, v0 []any) []actors.LayerWrite {
				v := v0[step%2].(mamba2.View)
				w := &actors.Mamba2Write{ConvSSM: actors.ConvSSM{ConvWindow: randTensor(r, tensor.Float32, v.ConvStates().Shape()...),
					SSMState: randTensor(r, tensor.Float32, v.SSMStates().Shape()...)}, AdvanceSeq: 1}
				return []actors.LayerWrite{{Layer: step % 2, Write: w}} // the other layer is not written
			}},
		{"lightning", actors.Spec{Lightning: &actors.LightningSpec{Layers: 2, Metadata: lm, DType: tensor.Float64}},
			func(r *rand.Rand, step int, _ []any) []actors.LayerWrite {
				var ws []actors.LayerWrite
				for l := range 2 {
					ws = append(ws, actors.LayerWrite{Layer: l, Write: &actors.LightningWrite{Key: randTensor(r, tensor.Float64, 2, 2, 1+step%2, 4),
						Value: randTensor(r, tensor.Float64, 2, 2, 1+step%2, 4), SlopeRate: []float64{0.5, 0.25}}})
				}
				return ws
			}},
	}
}

func marshalViews(t *testing.T, v actors.Version) [][]byte {
	t.Helper()
	var out [][]byte
	for _, view := range v.Views {
		parts := []any{view}
		if sh, ok := view.(*actors.Sharded); ok {
			parts = sh.Parts()
		}
		for _, p := range parts {
			b, err := p.(encoding.BinaryMarshaler).MarshalBinary()
			require.NoError(t, err)
			out = append(out, b)
		}
	}
	return out
}

// resultParts is a step result's per-device parts (itself when unsharded).
func resultParts(r actors.Result) []actors.Result {
	if r.Parts != nil {
		return r.Parts
	}
	return []actors.Result{r}
}

// Every cache kind runs clustered on three node processes, unsharded and
// cut over a dp 2 x tp 2 mesh (a grain per layer and device; the
// contiguous cache also with its kv heads over tp, a PartitionAxis other
// than the default): each step's
// results (a contiguous cache's key, value and mask) and every version's
// views are byte-identical to the embedded runtime's, a step that writes
// some layers only advances the others unchanged, and a transaction that
// writes a layer twice stages the second write on the first. The int8
// contiguous and paged caches hold the embedded codes and scales, and an
// int8 prefill inserted into the contiguous one lands as embedded.
func TestEveryKindMatchesEmbedded(t *testing.T) {
	rt := newClient(t, startNodes(t, 3))
	emb, err := actors.NewRuntime()
	require.NoError(t, err)
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	mesh := dp2tp2(t)
	// kv heads over tp (newer eformer releases' default; v0.0.38 leaves
	// them replicated): a non-default PartitionAxis sent to the grains
	kvOverTP := sharding.DefaultPartitionAxis()
	kvOverTP.KVHeadAxis = sharding.MeshAxes{sharding.TP}
	kvOverTP.DecodeKVHeadAxis = sharding.MeshAxes{sharding.TP}
	var cases []kindCase
	for _, kc := range kindCases(t) {
		cases = append(cases, kc)
		// the same cache cut over dp 2 x tp 2: 4 shard grains per layer
		kc.name += "/dp2tp2"
		kc.spec.Mesh = &mesh
		cases = append(cases, kc)
		if kc.spec.Transformer != nil {
			kc.name += "/kv-heads-over-tp"
			kc.spec.PartitionAxis = &kvOverTP
			cases = append(cases, kc)
		}
	}
	for _, kc := range kindCases(t) {
		if kc.spec.Transformer != nil { // int8 keys and values with bfloat16 scales
			q := kc
			q.name += "/int8"
			qt := *q.spec.Transformer
			qt.Quantization = tensor.Int8
			q.spec.Transformer = &qt
			cases = append(cases, q)
			// the same cut over dp 2 x tp 2: each grain holds its rows' codes
			// and scales
			q.name += "/dp2tp2"
			q.spec.Mesh = &mesh
			cases = append(cases, q)
			// left padding: row 0 starts at position 2
			kc.name += "/starts"
			tr := *kc.spec.Transformer
			tr.Starts = []int32{2, 0}
			kc.spec.Transformer = &tr
			cases = append(cases, kc)
			kc.name += "/dp2tp2"
			kc.spec.Mesh = &mesh
			cases = append(cases, kc)
		}
		if kc.spec.Paged != nil { // int8 pages with bfloat16 scales
			kc.name += "/int8"
			p := *kc.spec.Paged
			p.DType, p.Quantization = tensor.BFloat16, tensor.Int8
			kc.spec.Paged = &p
			cases = append(cases, kc)
			// the same cut over dp 2 x tp 2: each grain holds its kv heads'
			// codes and scales
			kc.name += "/dp2tp2"
			kc.spec.Mesh = &mesh
			cases = append(cases, kc)
		}
	}
	for _, kc := range cases {
		t.Run(kc.name, func(t *testing.T) {
			id := "k-" + strings.ReplaceAll(kc.name, "/", "-")
			clustered, err := rt.NewCache(id, kc.spec)
			require.NoError(t, err)
			embedded, err := emb.NewCache(id, kc.spec)
			require.NoError(t, err)
			v0, err := embedded.Current(ctx)
			require.NoError(t, err)
			full := make([]any, len(v0.Views)) // the writes are built on full views' shapes
			for l, v := range v0.Views {
				full[l] = v
				if sh, ok := v.(*actors.Sharded); ok {
					full[l], err = sh.Join()
					require.NoError(t, err)
				}
			}
			c0, err := clustered.Current(ctx)
			require.NoError(t, err)
			require.Equal(t, marshalViews(t, v0), marshalViews(t, c0), "version 0")
			r := rand.New(rand.NewPCG(3, uint64(len(kc.name))))
			for step := range 4 {
				ws := kc.writes(r, step, full)
				cn, cres, err := clustered.Step(ctx, uint64(step), ws)
				require.NoError(t, err, "step %d", step)
				en, eres, err := embedded.Step(ctx, uint64(step), ws)
				require.NoError(t, err)
				require.Equal(t, en, cn)
				require.Len(t, cres, len(eres))
				for i := range eres {
					ep, cp := resultParts(eres[i]), resultParts(cres[i])
					require.Len(t, cp, len(ep))
					for d := range ep {
						if kc.spec.PartitionAxis != nil {
							// each device holds one of the 2 kv heads
							require.Equal(t, 1, cp[d].Key.Shape()[2], "step %d write %d device %d: kv heads of %v", step, i, d, cp[d].Key.Shape())
						}
						require.True(t, bytes.Equal(ep[d].Key.Bytes(), cp[d].Key.Bytes()), "step %d write %d device %d: key", step, i, d)
						require.True(t, bytes.Equal(ep[d].Value.Bytes(), cp[d].Value.Bytes()), "step %d write %d device %d: value", step, i, d)
						require.Equal(t, ep[d].Mask, cp[d].Mask, "step %d write %d device %d: mask", step, i, d)
					}
				}
				ev, err := embedded.Current(ctx)
				require.NoError(t, err)
				cv, err := clustered.Current(ctx)
				require.NoError(t, err)
				require.Equal(t, ev.Number, cv.Number)
				require.Equal(t, marshalViews(t, ev), marshalViews(t, cv), "step %d", step)
			}
			// every earlier version is still readable, as embedded; a
			// future one is not
			for n := uint64(0); n <= 3; n++ {
				cs, err := clustered.Snapshot(ctx, n)
				require.NoError(t, err)
				es, err := embedded.Snapshot(ctx, n)
				require.NoError(t, err)
				require.Equal(t, marshalViews(t, es), marshalViews(t, cs), "snapshot of version %d", n)
			}
			_, err = clustered.Snapshot(ctx, 99)
			require.ErrorIs(t, err, actors.ErrNotFound)
			if tr := kc.spec.Transformer; tr != nil && tr.Quantization != tensor.None {
				// an insert of a 1-row prefill stored alike: its codes and
				// scales travel as stored and land as embedded
				m := tr.Metadata
				m.BatchSize = 1
				pre, err := transformer.InitStorage(m, tr.Storage(), nil)
				require.NoError(t, err)
				for l := range pre.Len() {
					v, err := pre.View(l)
					require.NoError(t, err)
					v, err = v.Append(randTensor(r, tensor.BFloat16, 1, 5, 2, 4), randTensor(r, tensor.BFloat16, 1, 5, 2, 4))
					require.NoError(t, err)
					pre, err = pre.WithView(l, v)
					require.NoError(t, err)
				}
				cn, err := clustered.Insert(ctx, 4, 1, pre)
				require.NoError(t, err)
				en, err := embedded.Insert(ctx, 4, 1, pre)
				require.NoError(t, err)
				require.Equal(t, en, cn)
				ev, err := embedded.Current(ctx)
				require.NoError(t, err)
				cv, err := clustered.Current(ctx)
				require.NoError(t, err)
				require.Equal(t, marshalViews(t, ev), marshalViews(t, cv), "after the insert")
			}
			if strings.HasPrefix(kc.name, "paged") {
				// a transaction writes layer 0 twice (two decode tokens):
				// the second write applies on the first one's staged view
				ct, err := clustered.Begin(ctx, 4)
				require.NoError(t, err)
				et, err := embedded.Begin(ctx, 4)
				require.NoError(t, err)
				for pos := range []int32{10, 11} {
					w := kc.writes(r, 1, nil)[0]
					w.Write.(*actors.PagedWrite).Step.DecodesPosition = []int32{int32(10 + pos)}
					cr, err := ct.WriteLayer(ctx, 0, w.Write)
					require.NoError(t, err)
					er, err := et.WriteLayer(ctx, 0, w.Write)
					require.NoError(t, err)
					cb := marshalViews(t, actors.Version{Views: []any{cr.View}})
					eb := marshalViews(t, actors.Version{Views: []any{er.View}})
					require.Equal(t, eb, cb, "staged view after the write at %d", 10+pos)
				}
				_, err = ct.Commit(ctx)
				require.NoError(t, err)
				_, err = et.Commit(ctx)
				require.NoError(t, err)
				ev, err := embedded.Current(ctx)
				require.NoError(t, err)
				cv, err := clustered.Current(ctx)
				require.NoError(t, err)
				require.Equal(t, marshalViews(t, ev), marshalViews(t, cv), "after the transaction")
			}
			require.NoError(t, clustered.Close())
		})
	}
}

// kvmesh run --members serves the workload with the caches' layers on
// three node processes and prints the embedded run's report: every field
// but the timings is the same, verification included.
func TestRunAgainstCluster(t *testing.T) {
	nodes := startNodes(t, 3)
	var members []string
	for _, n := range nodes {
		members = append(members, n.addr)
	}
	args := []string{"run", "--json", "--progress", "none", "--parity=false", "--requests", "32"}
	run := func(extra ...string) map[string]any {
		cmd := exec.Command(kvmeshBin, append(args, extra...)...)
		cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
		dieWithParent(cmd)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		done := make(chan error, 1)
		require.NoError(t, cmd.Start())
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			require.NoError(t, err, "kvmesh %v: %s", extra, errOut.String())
		case <-time.After(120 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("kvmesh run %v did not finish within 120 s", extra)
		}
		var rep map[string]any
		require.NoError(t, json.Unmarshal(out.Bytes(), &rep), "stdout is the JSON report alone: %q", out.String())
		return rep
	}
	clustered := run("--members", join(members), "--cluster-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	embedded := run()
	timing := map[string]bool{}
	for k := range embedded {
		if strings.Contains(k, "second") || strings.HasSuffix(k, "_us") {
			timing[k] = true
		}
	}
	require.NotEmpty(t, timing)
	for k, v := range embedded {
		if !timing[k] {
			require.Equal(t, v, clustered[k], "report field %s", k)
		}
	}
	require.Equal(t, true, clustered["verified"])
}
