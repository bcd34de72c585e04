package cluster

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"google.golang.org/protobuf/proto"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// A shard grain stages, commits and reads versions; a re-activated grain
// (another epoch) answers CODE_STATE_LOST for every request naming the old
// epoch, never a zero view; stale bases and unknown versions are refused.
func TestShardGrainEpochs(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	spawn := func() *actor.PID {
		return sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return newShardGrain() }))
	}
	ask := func(pid *actor.PID, m any) *messages.GrainReply {
		res, err := sys.Root.RequestFuture(pid, m, 5*time.Second).Result()
		require.NoError(t, err)
		return res.(*messages.GrainReply)
	}
	spec := &messages.CacheSpec{Metadata: &messages.CacheSpec_Mamba{Mamba: &messages.MambaMetadata{NumHiddenLayers: 2, BatchSize: 2,
		IntermediateSize: 3, SsmStateSize: 2, ConvKernelSize: 2}}, Storage: &messages.Storage{Dtype: messages.DType_DTYPE_FLOAT32}}
	g := spawn()
	init := ask(g, &messages.GrainInit{CacheId: "c", Layer: 1, Spec: spec})
	require.Equal(t, messages.Code_CODE_OK, init.Status.Code)
	epoch := init.Epoch
	state := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 2, 3, 2))
	w := &messages.LayerWrite{Layer: 1, Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{SsmState: tensorToProto(state)}}}
	assert.Equal(t, messages.Code_CODE_OK, ask(g, &messages.GrainWrite{CacheId: "c", Epoch: epoch, BaseVersion: 0, Write: w}).Status.Code)
	assert.Equal(t, messages.Code_CODE_OK, ask(g, &messages.GrainCommit{CacheId: "c", Epoch: epoch, Version: 1}).Status.Code)
	assert.Equal(t, messages.Code_CODE_OK, ask(g, &messages.GrainCommit{CacheId: "c", Epoch: epoch, Version: 1}).Status.Code, "a re-sent commit")
	stale := ask(g, &messages.GrainWrite{CacheId: "c", Epoch: epoch, BaseVersion: 0, Write: w})
	assert.Equal(t, messages.Code_CODE_STALE_VERSION, stale.Status.Code)

	read := ask(g, &messages.GrainRead{CacheId: "c", Epoch: epoch, Version: 1})
	require.Equal(t, messages.Code_CODE_OK, read.Status.Code)
	v, err := mamba.UnmarshalView(read.View)
	require.NoError(t, err)
	assert.Equal(t, state.Float64s(), v.SSMStates().Float64s())
	old := ask(g, &messages.GrainRead{CacheId: "c", Epoch: epoch, Version: 0})
	require.Equal(t, messages.Code_CODE_OK, old.Status.Code)
	v0, err := mamba.UnmarshalView(old.View)
	require.NoError(t, err)
	assert.Equal(t, make([]float64, 12), v0.SSMStates().Float64s())
	assert.Equal(t, messages.Code_CODE_NOT_FOUND, ask(g, &messages.GrainRead{CacheId: "c", Epoch: epoch, Version: 7}).Status.Code)

	again := spawn() // the same identity re-activated on another member
	for _, m := range []any{
		&messages.GrainRead{CacheId: "c", Epoch: epoch, Version: 1},
		&messages.GrainWrite{CacheId: "c", Epoch: epoch, BaseVersion: 1, Write: w},
		&messages.GrainCommit{CacheId: "c", Epoch: epoch, Version: 2},
	} {
		rep := ask(again, m)
		assert.Equal(t, messages.Code_CODE_STATE_LOST, rep.Status.Code)
		assert.Contains(t, rep.Status.Message, "cache c")
		assert.Empty(t, rep.View)
	}
	assert.NotEqual(t, epoch, ask(again, &messages.GrainInit{CacheId: "c", Layer: 1, Spec: spec}).Epoch)

	bad := ask(spawn(), &messages.GrainInit{CacheId: "p", Spec: &messages.CacheSpec{Metadata: &messages.CacheSpec_Paged{Paged: &messages.PagedMetadata{}}}})
	assert.Equal(t, messages.Code_CODE_INVALID_ARGUMENT, bad.Status.Code)
	assert.Contains(t, bad.Status.Message, "spec.storage.dtype")
}

// A grain keeps the number of versions its GrainInit asks for, the
// current one included (DefaultHistory when 0), each readable with its
// own bytes; older and future versions are not found, naming the range.
func TestShardGrainHistory(t *testing.T) {
	spec := &messages.CacheSpec{Metadata: &messages.CacheSpec_Mamba{Mamba: &messages.MambaMetadata{NumHiddenLayers: 1, BatchSize: 1,
		IntermediateSize: 1, SsmStateSize: 1, ConvKernelSize: 2}}, Storage: &messages.Storage{Dtype: messages.DType_DTYPE_FLOAT32}}
	for _, tc := range []struct {
		history uint32
		kept    int
	}{{3, 3}, {1, 1}, {0, DefaultHistory}} {
		t.Run(fmt.Sprint(tc.history), func(t *testing.T) {
			ask := newGrain(t)
			init := ask(&messages.GrainInit{CacheId: "h", Spec: spec, History: tc.history})
			require.Equal(t, messages.Code_CODE_OK, init.Status.Code)
			const last = 20
			for v := 1; v <= last; v++ { // version v's state is v
				state := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{float64(v)}, 1, 1, 1))
				w := &messages.LayerWrite{Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{SsmState: tensorToProto(state)}}}
				require.Equal(t, messages.Code_CODE_OK, ask(&messages.GrainWrite{CacheId: "h", Epoch: init.Epoch, BaseVersion: uint64(v - 1), Write: w}).Status.Code)
				require.Equal(t, messages.Code_CODE_OK, ask(&messages.GrainCommit{CacheId: "h", Epoch: init.Epoch, Version: uint64(v)}).Status.Code)
			}
			oldest := last - tc.kept + 1
			for v := 0; v <= last+1; v++ {
				rep := ask(&messages.GrainRead{CacheId: "h", Epoch: init.Epoch, Version: uint64(v)})
				if v < oldest || v > last {
					assert.Equal(t, messages.Code_CODE_NOT_FOUND, rep.Status.Code, "version %d", v)
					assert.Contains(t, rep.Status.Message, fmt.Sprintf("holds versions %d..%d", oldest, last))
					continue
				}
				require.Equal(t, messages.Code_CODE_OK, rep.Status.Code, "version %d", v)
				view, err := mamba.UnmarshalView(rep.View)
				require.NoError(t, err)
				assert.Equal(t, []float64{float64(v)}, view.SSMStates().Float64s(), "version %d", v)
			}
		})
	}
}

// newGrain spawns a shard grain on an actor system of its own (shut down
// when t ends) and returns a function that asks it.
func newGrain(t *testing.T) func(m any) *messages.GrainReply {
	sys := actor.NewActorSystem()
	t.Cleanup(sys.Shutdown)
	g := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return newShardGrain() }))
	return func(m any) *messages.GrainReply {
		res, err := sys.Root.RequestFuture(g, m, 5*time.Second).Result()
		require.NoError(t, err)
		return res.(*messages.GrainReply)
	}
}

// A write larger than a part arrives in GrainParts (in any order, a part
// re-sent), its reply and a read larger than a part come back in parts
// fetched by call id, and the reassembled view is the one the core
// computes.
func TestShardGrainParts(t *testing.T) {
	ask := newGrain(t)
	// 1 layer, 64 pages of 16 tokens, 4 kv heads of 64 dims, float32:
	// 1 MiB of K and 1 MiB of V.
	meta := paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 64, NumPagesPerSequence: 64, MaxSequences: 1024,
		PageSize: 16, NumKVHeads: 4, KVHeadDimSize: 64, HBMUtilization: 0.5}
	spec := actors.Spec{Paged: &actors.PagedSpec{Metadata: meta, DType: tensor.Float32}}
	ps, err := specToProto(spec)
	require.NoError(t, err)
	init := ask(&messages.GrainInit{CacheId: "c", Spec: ps})
	require.Equal(t, messages.Code_CODE_OK, init.Status.Code, init.Status.GetMessage())

	const T = 512 // 512 tokens x 4 x 64 x 4 bytes = 512 KiB each of K and V
	k := wireRand(rand.New(rand.NewSource(1)), tensor.Float32, T, 4, 64)
	table := make([]int32, 64)
	for i := range table {
		table[i] = int32(i + 1)
	}
	table[63] = 0
	step := paged.StepMetadata{PrefillLength: T, PrefillPageTable: table}
	w := &actors.PagedWrite{PrefillKey: k, PrefillValue: k, Step: step}
	pw, err := writeToProto(0, w)
	require.NoError(t, err)
	data, err := proto.Marshal(&messages.GrainWrite{CacheId: "c", Epoch: init.Epoch, Write: pw, ReturnView: true, CallId: "w1"})
	require.NoError(t, err)
	require.Greater(t, len(data), partSize)
	n := (len(data) + partSize - 1) / partSize
	var last *messages.GrainReply
	for _, i := range append([]int{n - 1}, func() []int {
		var rest []int
		for i := range n - 1 {
			rest = append(rest, i, i) // every other part twice
		}
		return rest
	}()...) {
		last = ask(&messages.GrainPart{CacheId: "c", CallId: "w1", Index: uint32(i), Count: uint32(n), Data: data[i*partSize : min((i+1)*partSize, len(data))]})
	}
	require.Positive(t, last.Parts, "the write's reply holds a 2 MiB view: it comes in parts")
	full := append([]byte(nil), last.Part...)
	for i := 1; i < int(last.Parts); i++ {
		p := ask(&messages.GrainFetch{CacheId: "c", CallId: "w1", Index: uint32(i)})
		require.Equal(t, last.Parts, p.Parts)
		full = append(full, p.Part...)
	}
	rep := &messages.GrainReply{}
	require.NoError(t, proto.Unmarshal(full, rep))
	require.Equal(t, messages.Code_CODE_OK, rep.Status.Code, rep.Status.GetMessage())
	staged, err := paged.UnmarshalView(rep.View)
	require.NoError(t, err)
	c, err := paged.Init(meta, tensor.Float32)
	require.NoError(t, err)
	v0, err := c.View(0)
	require.NoError(t, err)
	want, err := v0.WritePrefill(k, k, step)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want.KeyPages().Bytes(), staged.KeyPages().Bytes()), "staged keys differ from the core's")
	assert.Equal(t, messages.Code_CODE_NOT_FOUND, ask(&messages.GrainFetch{CacheId: "c", CallId: "nope", Index: 1}).Status.Code)

	require.Equal(t, messages.Code_CODE_OK, ask(&messages.GrainCommit{CacheId: "c", Epoch: init.Epoch, Version: 1}).Status.Code)
	read := ask(&messages.GrainRead{CacheId: "c", Epoch: init.Epoch, Version: 1, CallId: "r1"})
	require.Positive(t, read.Parts)
	check := ask(&messages.GrainRead{CacheId: "c", Epoch: init.Epoch, Version: 1, CheckOnly: true})
	assert.Zero(t, check.Parts)
	assert.Empty(t, check.View)
	assert.Equal(t, messages.Code_CODE_OK, check.Status.Code)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "x"}, `listen "x"`},
		{Config{Listen: "127.0.0.1:70000"}, `listen "127.0.0.1:70000"`},
		{Config{Listen: "127.0.0.1:4000"}, "needs --members"},
		{Config{Listen: "127.0.0.1:4000", Members: []string{"nope"}}, `member "nope"`},
		{Config{Listen: "127.0.0.1:4000", Provider: "etcd"}, "needs --etcd"},
		{Config{Listen: "127.0.0.1:4000", Provider: "consul"}, `provider "consul"`},
		{Config{Listen: "127.0.0.1:4000", Members: []string{"127.0.0.1:4000"}, History: -1}, "history -1, want 0..65536"},
		{Config{Listen: "127.0.0.1:4000", Members: []string{"127.0.0.1:4000"}, History: 1 << 20}, "history 1048576"},
	} {
		err := tc.cfg.Validate()
		require.ErrorIs(t, err, ErrConfig)
		assert.Contains(t, err.Error(), tc.want)
	}
	require.NoError(t, Config{Listen: "127.0.0.1:4000", Members: []string{"127.0.0.1:4000"}}.Validate())
	assert.Equal(t, "cache/a/layer/3/shard/0", Identity("a", 3, 0))
}

// A page-manager grain allocates and frees like EasyDeL's HBMPageManager
// (page 0 is never handed out), keeps its allocator's error codes, and a
// re-activated one answers CODE_STATE_LOST rather than handing out pages
// that may be in use.
func TestPageGrainEpochs(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	spawn := func() *actor.PID {
		return sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return newPageGrain() }))
	}
	ask := func(pid *actor.PID, m any) *messages.PagesReply {
		res, err := sys.Root.RequestFuture(pid, m, 5*time.Second).Result()
		require.NoError(t, err)
		return res.(*messages.PagesReply)
	}
	md := &messages.PagedMetadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 5, NumPagesPerSequence: 2, MaxSequences: 8,
		PageSize: 4, NumKvHeads: 1, KvHeadDimSize: 2, HbmUtilization: 0.5}
	g := spawn()
	init := ask(g, &messages.PagesInit{CacheId: "p", Metadata: md})
	require.Equal(t, messages.Code_CODE_OK, init.Status.Code)
	assert.Equal(t, uint32(4), init.Free)
	pre := ask(g, &messages.AllocPrefillPages{CacheId: "p", PromptLen: 6, Epoch: init.Epoch})
	require.Equal(t, messages.Code_CODE_OK, pre.Status.Code)
	assert.Equal(t, []int32{1, 2}, pre.Pages)
	assert.Equal(t, uint32(2), pre.Free)
	full := ask(g, &messages.AllocPages{CacheId: "p", Count: 3, Epoch: init.Epoch})
	assert.Equal(t, messages.Code_CODE_NO_FREE_PAGES, full.Status.Code)
	freed := ask(g, &messages.FreePages{CacheId: "p", Pages: []int32{1}, Epoch: init.Epoch})
	require.Equal(t, messages.Code_CODE_OK, freed.Status.Code)
	assert.Equal(t, uint32(3), freed.Free)

	again := spawn()
	lost := ask(again, &messages.AllocPages{CacheId: "p", Count: 1, Epoch: init.Epoch})
	assert.Equal(t, messages.Code_CODE_STATE_LOST, lost.Status.Code)
	assert.Contains(t, lost.Status.Message, "cache p")
	assert.Empty(t, lost.Pages)
}

// A transaction may write a layer several times: write n applies to the
// view the first n staged, a re-sent write (same call id) is applied once,
// and a write out of order is refused.
func TestShardGrainWritesOnStaged(t *testing.T) {
	ask := newGrain(t)
	spec := &messages.CacheSpec{Metadata: &messages.CacheSpec_Mamba{Mamba: &messages.MambaMetadata{NumHiddenLayers: 1, BatchSize: 1,
		IntermediateSize: 2, SsmStateSize: 1, ConvKernelSize: 3}}, Storage: &messages.Storage{Dtype: messages.DType_DTYPE_FLOAT64}}
	init := ask(&messages.GrainInit{CacheId: "c", Spec: spec})
	require.Equal(t, messages.Code_CODE_OK, init.Status.Code)
	col := func(a, b float64) *messages.LayerWrite {
		x := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{a, b}, 1, 2))
		return &messages.LayerWrite{Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{ConvColumn: tensorToProto(x), CachePosition: 2}}}
	}
	write := func(seq uint32, call string, w *messages.LayerWrite) *messages.GrainReply {
		return ask(&messages.GrainWrite{CacheId: "c", Epoch: init.Epoch, Write: w, ReturnView: true, Seq: seq, CallId: call})
	}
	conv := func(rep *messages.GrainReply) []float64 {
		require.Equal(t, messages.Code_CODE_OK, rep.Status.Code, rep.Status.GetMessage())
		v, err := mamba.UnmarshalView(rep.View)
		require.NoError(t, err)
		return v.ConvStates().Float64s()
	}
	assert.Equal(t, []float64{0, 0, 1, 0, 0, 2}, conv(write(0, "a", col(1, 2))))
	assert.Equal(t, []float64{0, 1, 3, 0, 2, 4}, conv(write(1, "b", col(3, 4))), "the second write rolls the first one's column left")
	assert.Equal(t, []float64{0, 1, 3, 0, 2, 4}, conv(write(1, "b", col(3, 4))), "a re-sent write is applied once")
	assert.Equal(t, messages.Code_CODE_STALE_VERSION, write(5, "c", col(5, 6)).Status.Code)
	require.Equal(t, messages.Code_CODE_OK, ask(&messages.GrainCommit{CacheId: "c", Epoch: init.Epoch, Version: 1}).Status.Code)
	read := ask(&messages.GrainRead{CacheId: "c", Epoch: init.Epoch, Version: 1})
	assert.Equal(t, []float64{0, 1, 3, 0, 2, 4}, conv(read))
}

// A grain undoes a commit on request: the version before is current again
// with its bytes, undoing again is a no-op, undoing a version it does not
// hold is stale, and it commits anew afterwards; even a grain that keeps
// one readable version can undo its last commit.
func TestShardGrainRollback(t *testing.T) {
	spec := &messages.CacheSpec{Metadata: &messages.CacheSpec_Mamba{Mamba: &messages.MambaMetadata{NumHiddenLayers: 1, BatchSize: 1,
		IntermediateSize: 1, SsmStateSize: 1, ConvKernelSize: 2}}, Storage: &messages.Storage{Dtype: messages.DType_DTYPE_FLOAT32}}
	for _, history := range []uint32{1, 0} {
		t.Run(fmt.Sprint(history), func(t *testing.T) {
			ask := newGrain(t)
			init := ask(&messages.GrainInit{CacheId: "r", Spec: spec, History: history})
			require.Equal(t, messages.Code_CODE_OK, init.Status.Code)
			commit := func(v int) {
				state := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{float64(v)}, 1, 1, 1))
				w := &messages.LayerWrite{Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{SsmState: tensorToProto(state)}}}
				require.Equal(t, messages.Code_CODE_OK, ask(&messages.GrainWrite{CacheId: "r", Epoch: init.Epoch, BaseVersion: uint64(v - 1), Write: w}).Status.Code)
				require.Equal(t, messages.Code_CODE_OK, ask(&messages.GrainCommit{CacheId: "r", Epoch: init.Epoch, Version: uint64(v)}).Status.Code)
			}
			// read returns version v's state, or nil when the grain does not
			// hold it
			read := func(v uint64) []float64 {
				rep := ask(&messages.GrainRead{CacheId: "r", Epoch: init.Epoch, Version: v})
				if rep.Status.Code == messages.Code_CODE_NOT_FOUND {
					return nil
				}
				require.Equal(t, messages.Code_CODE_OK, rep.Status.Code)
				view, err := mamba.UnmarshalView(rep.View)
				require.NoError(t, err)
				return view.SSMStates().Float64s()
			}
			commit(1)
			commit(2)
			rollback := func(v uint64) *messages.GrainReply {
				return ask(&messages.GrainCommit{CacheId: "r", Epoch: init.Epoch, Version: v, Rollback: true})
			}
			require.Equal(t, messages.Code_CODE_OK, rollback(2).Status.Code)
			assert.Nil(t, read(2), "version 2 is undone")
			assert.Equal(t, []float64{1}, read(1))
			assert.Equal(t, messages.Code_CODE_OK, rollback(2).Status.Code, "undoing again is a no-op")
			assert.Equal(t, []float64{1}, read(1))
			assert.Equal(t, messages.Code_CODE_STALE_VERSION, rollback(5).Status.Code)
			commit(2)
			assert.Equal(t, []float64{2}, read(2))
		})
	}
}
