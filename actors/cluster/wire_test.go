package cluster

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
	"github.com/kvmesh/kvmesh/sharding"
)

// viaWire marshals m and returns a fresh message unmarshalled from the
// bytes, so a test covers the real wire.
func viaWire[M proto.Message](t testing.TB, m M) M {
	t.Helper()
	data, err := proto.Marshal(m)
	require.NoError(t, err)
	out := m.ProtoReflect().Type().New().Interface().(M)
	require.NoError(t, proto.Unmarshal(data, out))
	return out
}

// wireRand returns a tensor of dtype and shape holding seeded normal values
// (rounded to dtype; int8 and uint8 get small integers).
func wireRand(r *rand.Rand, dt tensor.DType, shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = r.NormFloat64() * 3
		if !dt.IsFloat() {
			vals[i] = float64(r.Intn(100))
		}
	}
	return tensor.Must(tensor.FromFloat64s(dt, vals, shape...))
}

// requireSameTensor compares dtype, shape and bytes.
func requireSameTensor(t *testing.T, field string, want, got tensor.Tensor) {
	t.Helper()
	require.Equal(t, want.IsZero(), got.IsZero(), "%s: zero", field)
	require.Equal(t, want.DType(), got.DType(), "%s: dtype", field)
	require.True(t, slices.Equal(want.Shape(), got.Shape()), "%s: shape %v, want %v", field, got.Shape(), want.Shape())
	require.True(t, bytes.Equal(want.Bytes(), got.Bytes()), "%s: the bytes differ", field)
}

// requireSameView compares two views by their binary snapshots.
func requireSameView(t *testing.T, what string, want, got any) {
	t.Helper()
	wb, err := want.(encoding.BinaryMarshaler).MarshalBinary()
	require.NoError(t, err)
	gb, err := got.(encoding.BinaryMarshaler).MarshalBinary()
	require.NoError(t, err)
	require.True(t, bytes.Equal(wb, gb), "%s: the views' snapshots differ (%d and %d bytes)", what, len(wb), len(gb))
}

func TestWireTensorRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	chunked := tensor.Must(tensor.NewChunked(tensor.BFloat16, 6, 4, 6))
	for _, tc := range []struct {
		name string
		x    tensor.Tensor
	}{
		{"float32", wireRand(r, tensor.Float32, 2, 3, 4)},
		{"bfloat16", wireRand(r, tensor.BFloat16, 5, 7)},
		{"float16", wireRand(r, tensor.Float16, 3, 1, 2)},
		{"float64", wireRand(r, tensor.Float64, 4, 2, 2, 3)},
		{"int8", wireRand(r, tensor.I8, 9)},
		{"uint8", wireRand(r, tensor.U8, 2, 8)},
		{"scalar", wireRand(r, tensor.Float64)},
		{"empty", tensor.Must(tensor.New(tensor.Float32, 0, 3))},
		{"chunked", chunked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := viaWire(t, tensorToProto(tc.x))
			got, err := tensorFromProto(p)
			require.NoError(t, err)
			requireSameTensor(t, tc.name, tc.x, got)
		})
	}
	t.Run("zero", func(t *testing.T) {
		assert.Nil(t, tensorToProto(tensor.Tensor{}))
		got, err := tensorFromProto(nil)
		require.NoError(t, err)
		assert.True(t, got.IsZero())
	})
}

func TestWireMaskRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	randMask := func(shape ...int) transformer.Mask {
		n := 1
		for _, d := range shape {
			n *= d
		}
		data := make([]bool, n)
		for i := range data {
			data[i] = r.Intn(3) != 0
		}
		return transformer.Mask{Shape: shape, Data: data}
	}
	for _, m := range []transformer.Mask{randMask(3, 16), randMask(3, 1, 4, 16), randMask(2, 1, 1, 8), transformer.CausalMask(5), randMask(0, 4)} {
		t.Run(fmt.Sprint(m.Shape), func(t *testing.T) {
			p, err := maskToProto("m", m)
			require.NoError(t, err)
			got, err := maskFromProto("m", viaWire(t, p))
			require.NoError(t, err)
			assert.True(t, m.Equal(got), "got %v", got)
			assert.False(t, got.IsZero())
		})
	}
	p, err := maskToProto("m", transformer.Mask{})
	require.NoError(t, err)
	assert.Nil(t, p)
	got, err := maskFromProto("m", nil)
	require.NoError(t, err)
	assert.True(t, got.IsZero())
}

// wireMesh builds a mesh of sizes in the default order over devices
// 0..n-1 with no memory (what a decoded mesh is).
func wireMesh(t testing.TB, sizes map[string]int) *sharding.Mesh {
	n := 1
	for _, s := range sizes {
		n *= s
	}
	m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: sizes, Devices: sharding.UniformDevices(n, 0)})
	require.NoError(t, err)
	return &m
}

// wireOrderedMesh is wireMesh with the device order given, slowest axis
// first.
func wireOrderedMesh(t testing.TB, sizes map[string]int, order ...string) *sharding.Mesh {
	n := 1
	for _, s := range sizes {
		n *= s
	}
	m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: sizes, Order: order, Devices: sharding.UniformDevices(n, 0)})
	require.NoError(t, err)
	return &m
}

// wireKVHeadsOverTP is the default PartitionAxis with kv heads cut over tp
// in every mode, as newer eformer releases default.
func wireKVHeadsOverTP() *sharding.PartitionAxis {
	pa := sharding.DefaultPartitionAxis()
	pa.KVHeadAxis = sharding.MeshAxes{sharding.TP}
	pa.DecodeKVHeadAxis = sharding.MeshAxes{sharding.TP}
	return &pa
}

// wireSpecCase is a spec that travels unchanged.
type wireSpecCase struct {
	name string
	spec actors.Spec
}

// wireSpecCases returns the specs TestWireSpecRoundTrip sends, also the
// seeds of FuzzWireSpec.
func wireSpecCases(t testing.TB) []wireSpecCase {
	// a custom batch axis: batch rows over dp only, and over dp then fsdp
	// while decoding; an explicitly empty (non-nil) rule for query lengths
	customBatch := sharding.DefaultPartitionAxis()
	customBatch.BatchAxis = sharding.MeshAxes{sharding.DP}
	customBatch.DecodeBatchAxis = sharding.MeshAxes{sharding.DP, sharding.FSDP}
	customBatch.DecodeQuerySequenceAxis = sharding.MeshAxes{}
	// renamed mesh axes (a PartitionAxis need not use the mesh's names)
	renamed := sharding.DefaultPartitionAxis()
	renamed.TensorParallelAxis = "model"
	renamed.HeadAxis = sharding.MeshAxes{"model"}
	renamed.DecodeHeadAxis = nil
	mmeta := mamba.Metadata{NumHiddenLayers: 3, BatchSize: 2, IntermediateSize: 6, SSMStateSize: 4, ConvKernelSize: 4}
	m2meta := mamba2.Metadata{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 8, NumHeads: 4, HeadDim: 2, StateSize: 3, ConvKernelSize: 4, NGroups: 2}
	withPA := func(raw string) json.RawMessage { return json.RawMessage(raw) }
	mambaPA, mamba2PA, lightningPA := mmeta, m2meta, lightning.Metadata{BatchSize: lightning.Ptr(2)}
	mambaPA.PartitionAxis = withPA(`{"batch_axis":["fsdp","dp"],"kv_head_axis":"tp"}`)
	mamba2PA.PartitionAxis = withPA(`{ "x" : 1 }`) // verbatim, not even compacted or checked
	lightningPA.PartitionAxis = withPA(`1`)
	mambaEmptyPA := mmeta
	mambaEmptyPA.PartitionAxis = json.RawMessage{} // present and empty: not nil
	return []wireSpecCase{
		{"mamba on a tp-major mesh (a device order other than the default)", actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32, Metadata: mmeta},
			Mesh: wireOrderedMesh(t, map[string]int{sharding.DP: 2, sharding.TP: 2}, sharding.TP, sharding.DP)}},
		{"transformer with left padding (starts)", actors.Spec{Transformer: &actors.TransformerSpec{DType: tensor.Float32, Starts: []int32{0, 3, 1},
			Metadata: transformer.Metadata{BatchSize: 3, SequenceLength: 8, NumHiddenLayers: 1, KeyHeads: 2, ValueHeads: 2, KeyDim: 4, ValueDim: 4}}}},
		{"transformer with num_heads and head_dim", actors.Spec{Transformer: &actors.TransformerSpec{DType: tensor.BFloat16, Metadata: transformer.Metadata{
			BatchSize: 4, SequenceLength: 64, NumHiddenLayers: 3, PadTokenID: 7, NumHeads: transformer.Ptr(8), HeadDim: transformer.Ptr(0),
			KeyHeads: 8, ValueHeads: 2, KeyDim: 16, ValueDim: 32, UpdateCausalMask: false, CreateAttentionBias: true}}}},
		{"transformer without num_heads and head_dim, on a mesh", actors.Spec{
			Transformer: &actors.TransformerSpec{DType: tensor.Float64, Metadata: transformer.Metadata{
				BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 1, KeyHeads: 2, ValueHeads: 2, KeyDim: 4, ValueDim: 4, UpdateCausalMask: true}},
			Mesh: wireMesh(t, map[string]int{sharding.DP: 2, sharding.FSDP: 1, sharding.TP: 2}), Mode: ""}},
		{"transformer, kv heads over tp, on a mesh", actors.Spec{
			Transformer: &actors.TransformerSpec{DType: tensor.BFloat16, Metadata: transformer.Metadata{
				BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 2, KeyHeads: 4, ValueHeads: 4, KeyDim: 4, ValueDim: 4}},
			Mesh: wireMesh(t, map[string]int{sharding.DP: 2, sharding.TP: 2}), PartitionAxis: wireKVHeadsOverTP()}},
		{"transformer, int8 storage, left padding", actors.Spec{Transformer: &actors.TransformerSpec{DType: tensor.BFloat16,
			Quantization: tensor.Int8, Starts: []int32{2, 0},
			Metadata: transformer.Metadata{BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 2, KeyHeads: 2, ValueHeads: 2, KeyDim: 4, ValueDim: 4}}}},
		{"transformer, nf4 storage, block 32, kv heads over tp, on a mesh", actors.Spec{
			Transformer: &actors.TransformerSpec{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 32, Metadata: transformer.Metadata{
				BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 1, KeyHeads: 4, ValueHeads: 4, KeyDim: 64, ValueDim: 64}},
			Mesh: wireMesh(t, map[string]int{sharding.DP: 2, sharding.TP: 2}), PartitionAxis: wireKVHeadsOverTP()}},
		{"paged", actors.Spec{Paged: &actors.PagedSpec{DType: tensor.Float16, Metadata: paged.Metadata{
			BatchSize: 3, NumHiddenLayers: 2, NumPagesPerLayer: 41, NumPagesPerSequence: 5, MaxSequences: 80, PageSize: 16,
			NumKVHeads: 4, KVHeadDimSize: 64, HBMUtilization: 0.37}}, Mesh: wireMesh(t, map[string]int{sharding.SP: 3})}},
		{"paged, int8 storage", actors.Spec{Paged: &actors.PagedSpec{DType: tensor.BFloat16, Quantization: tensor.Int8, Metadata: paged.Metadata{
			BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16, PageSize: 4,
			NumKVHeads: 2, KVHeadDimSize: 8, HBMUtilization: 0.5}}}},
		{"paged, nf4 storage, block 32", actors.Spec{Paged: &actors.PagedSpec{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 32,
			Metadata: paged.Metadata{BatchSize: 2, NumHiddenLayers: 1, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
				PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 64, HBMUtilization: 0.5}}}},
		{"paged, custom batch axis, prefill mode", actors.Spec{Paged: &actors.PagedSpec{DType: tensor.Float32, Metadata: paged.Metadata{
			BatchSize: 4, NumHiddenLayers: 1, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 8, PageSize: 4,
			NumKVHeads: 2, KVHeadDimSize: 8, HBMUtilization: 0.5}},
			Mesh: wireMesh(t, map[string]int{sharding.DP: 2, sharding.FSDP: 2}), PartitionAxis: &customBatch, Mode: sharding.ModePrefill}},
		{"mamba", actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32, Metadata: mmeta}}},
		{"mamba, metadata partition axis, insert mode, renamed tp", actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32, Metadata: mambaPA},
			PartitionAxis: &renamed, Mode: sharding.ModeInsert}},
		{"mamba, empty metadata partition axis, explicit decode mode", actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32, Metadata: mambaEmptyPA},
			Mode: sharding.ModeDecode}},
		{"mamba2", actors.Spec{Mamba2: &actors.Mamba2Spec{DType: tensor.BFloat16, Metadata: m2meta}}},
		{"mamba2, metadata partition axis, train mode", actors.Spec{Mamba2: &actors.Mamba2Spec{DType: tensor.BFloat16, Metadata: mamba2PA},
			Mode: sharding.ModeTrain}},
		{"lightning, some sizes unset", actors.Spec{Lightning: &actors.LightningSpec{Layers: 5, DType: tensor.Float64, Metadata: lightning.Metadata{
			BatchSize: lightning.Ptr(2), KeyHeads: lightning.Ptr(3), ValueHeads: lightning.Ptr(3), KeyDim: lightning.Ptr(0), ValueDim: lightning.Ptr(6)}}}},
		{"lightning, all sizes set", actors.Spec{Lightning: &actors.LightningSpec{Layers: 1, DType: tensor.BFloat16, Metadata: lightning.Metadata{
			BatchSize: lightning.Ptr(1), NumHeads: lightning.Ptr(2), HeadDim: lightning.Ptr(3), KeyHeads: lightning.Ptr(4),
			ValueHeads: lightning.Ptr(5), KeyDim: lightning.Ptr(6), ValueDim: lightning.Ptr(7)}}}},
		{"lightning, metadata partition axis", actors.Spec{Lightning: &actors.LightningSpec{Layers: 2, DType: tensor.Float32, Metadata: lightningPA},
			PartitionAxis: wireKVHeadsOverTP(), Mode: sharding.ModePrefill}},
	}
}

func TestWireSpecRoundTrip(t *testing.T) {
	for _, tc := range wireSpecCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			p, err := specToProto(tc.spec)
			require.NoError(t, err)
			got, err := specFromProto(viaWire(t, p))
			require.NoError(t, err)
			assert.Equal(t, tc.spec, got)
			// nil and empty stay apart
			assert.Equal(t, metaPartitionAxis(tc.spec) == nil, metaPartitionAxis(got) == nil, "metadata partition axis nil")
			if tc.spec.PartitionAxis != nil {
				want, have := reflect.ValueOf(*tc.spec.PartitionAxis), reflect.ValueOf(*got.PartitionAxis)
				for i := range want.NumField() {
					if want.Field(i).Kind() == reflect.Slice {
						assert.Equal(t, want.Field(i).IsNil(), have.Field(i).IsNil(), "PartitionAxis.%s nil", want.Type().Field(i).Name)
					}
				}
			}
		})
	}
}

// metaPartitionAxis returns the metadata PartitionAxis of a Mamba, Mamba2
// or lightning spec (nil for the other kinds).
func metaPartitionAxis(s actors.Spec) json.RawMessage {
	switch {
	case s.Mamba != nil:
		return s.Mamba.Metadata.PartitionAxis
	case s.Mamba2 != nil:
		return s.Mamba2.Metadata.PartitionAxis
	case s.Lightning != nil:
		return s.Lightning.Metadata.PartitionAxis
	}
	return nil
}

// Every field of sharding.PartitionAxis has a field of the wire message
// with its EasyDeL (JSON) name, and a PartitionAxis whose fields all
// differ travels unchanged: a field added to sharding.PartitionAxis but
// not to the wire fails here rather than being dropped.
func TestWirePartitionAxisEveryField(t *testing.T) {
	var pa sharding.PartitionAxis
	v := reflect.ValueOf(&pa).Elem()
	wire := (&messages.PartitionAxis{}).ProtoReflect().Descriptor().Fields()
	require.Equal(t, v.NumField(), wire.Len(), "fields of sharding.PartitionAxis and of messages.PartitionAxis")
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name := f.Tag.Get("json")
		wf := wire.ByName(protoreflect.Name(name))
		require.NotNil(t, wf, "PartitionAxis.%s (%s) has no wire field", f.Name, name)
		switch f.Type {
		case reflect.TypeFor[string]():
			assert.Equal(t, protoreflect.StringKind, wf.Kind(), name)
			v.Field(i).SetString(fmt.Sprintf("axis%d", i))
		case reflect.TypeFor[sharding.MeshAxes]():
			assert.Equal(t, protoreflect.FullName("kvmesh.v1.MeshAxes"), wf.Message().FullName(), name)
			switch i % 3 {
			case 0: // nil: None
			case 1:
				v.Field(i).Set(reflect.ValueOf(sharding.MeshAxes{fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)}))
			default:
				v.Field(i).Set(reflect.ValueOf(sharding.MeshAxes{fmt.Sprintf("a%d", i)}))
			}
		default:
			t.Fatalf("PartitionAxis.%s has type %s, which the wire test does not know", f.Name, f.Type)
		}
	}
	p, err := partitionAxisToProto(&pa)
	require.NoError(t, err)
	got := partitionAxisFromProto(viaWire(t, p))
	require.NotNil(t, got)
	assert.Equal(t, pa, *got)
	assert.Nil(t, partitionAxisFromProto(nil))
	none, err := partitionAxisToProto(nil)
	require.NoError(t, err)
	assert.Nil(t, none)
}

// A non-default PartitionAxis and Mode reach the receiver with their
// meaning: the decoded spec cuts layers as the sent one does.
func TestWireSpecShardsTheSame(t *testing.T) {
	spec := actors.Spec{Transformer: &actors.TransformerSpec{DType: tensor.Float32, Metadata: transformer.Metadata{
		BatchSize: 2, SequenceLength: 4, NumHiddenLayers: 1, KeyHeads: 2, ValueHeads: 2, KeyDim: 2, ValueDim: 2}},
		Mesh: wireMesh(t, map[string]int{sharding.DP: 2, sharding.TP: 2}), PartitionAxis: wireKVHeadsOverTP(), Mode: sharding.ModePrefill}
	p, err := specToProto(spec)
	require.NoError(t, err)
	got, err := specFromProto(viaWire(t, p))
	require.NoError(t, err)
	want, err := spec.ShardedViews()
	require.NoError(t, err)
	have, err := got.ShardedViews()
	require.NoError(t, err)
	require.Len(t, have, len(want))
	for l := range want {
		wp, hp := want[l].Parts(), have[l].Parts()
		require.Len(t, hp, len(wp))
		for d := range wp {
			requireSameView(t, fmt.Sprintf("layer %d device %d", l, d), wp[d], hp[d])
			// kv heads are cut over tp: one of the two heads per device
			assert.Equal(t, 1, hp[d].(transformer.View).Key().Shape()[2], "layer %d device %d: kv heads", l, d)
		}
	}
}

func TestWireSpecDefaults(t *testing.T) {
	meta := mamba.Metadata{NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: 2, SSMStateSize: 2, ConvKernelSize: 2}
	m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.DP: 2, sharding.TP: 2}, Devices: sharding.UniformDevices(4, 1<<30)})
	require.NoError(t, err)
	one, err := sharding.NewMesh(sharding.MeshConfig{Devices: sharding.UniformDevices(1, 1<<30)})
	require.NoError(t, err)

	// The defaults travel as absent fields: no partition axis, the
	// unspecified mode, no metadata partition axis.
	p, err := specToProto(actors.Spec{Mamba: &actors.MambaSpec{Metadata: meta, DType: tensor.Float32}, Mesh: &m})
	require.NoError(t, err)
	assert.Nil(t, p.GetPartitionAxis())
	assert.Equal(t, messages.Mode_MODE_UNSPECIFIED, p.GetMode())
	assert.Nil(t, p.GetMamba().PartitionAxisJson)
	got, err := specFromProto(viaWire(t, p))
	require.NoError(t, err)
	assert.Nil(t, got.PartitionAxis)
	assert.Equal(t, sharding.Mode(""), got.Mode)
	assert.Nil(t, got.Mamba.Metadata.PartitionAxis)
	// devices travel as 0..n-1
	require.NotNil(t, got.Mesh)
	assert.Equal(t, m.Axes(), got.Mesh.Axes())
	assert.Equal(t, sharding.UniformDevices(4, 0), got.Mesh.Devices())

	// The explicit default mode stays explicit, the default partition axis
	// given explicitly stays given (a Spec treats both as the defaults).
	pa := sharding.DefaultPartitionAxis()
	p, err = specToProto(actors.Spec{Mamba: &actors.MambaSpec{Metadata: meta, DType: tensor.Float32}, Mode: sharding.ModeDecode, PartitionAxis: &pa})
	require.NoError(t, err)
	assert.Equal(t, messages.Mode_MODE_DECODE, p.GetMode())
	got, err = specFromProto(viaWire(t, p))
	require.NoError(t, err)
	assert.Equal(t, sharding.ModeDecode, got.Mode)
	require.NotNil(t, got.PartitionAxis)
	assert.Equal(t, pa, *got.PartitionAxis)

	// a mesh without axes decodes as nil
	p, err = specToProto(actors.Spec{Mamba: &actors.MambaSpec{Metadata: meta, DType: tensor.Float32}, Mesh: &one})
	require.NoError(t, err)
	got, err = specFromProto(viaWire(t, p))
	require.NoError(t, err)
	assert.Nil(t, got.Mesh)
}

func TestWireSpecErrors(t *testing.T) {
	tmeta := transformer.Metadata{BatchSize: 1, SequenceLength: 4, KeyHeads: 1, ValueHeads: 1, KeyDim: 2, ValueDim: 2}
	mmeta := mamba.Metadata{NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: 2, SSMStateSize: 2, ConvKernelSize: 2}
	mspec := &actors.MambaSpec{Metadata: mmeta, DType: tensor.Float32}
	badMeshName := sharding.DefaultPartitionAxis()
	badMeshName.TensorParallelAxis = "t\xffp"
	badRule := sharding.DefaultPartitionAxis()
	badRule.KVHeadAxis = sharding.MeshAxes{sharding.TP, "\xfe"}
	for _, tc := range []struct {
		name string
		spec actors.Spec
		msg  string
	}{
		{"no kind", actors.Spec{}, "exactly one kind, got 0"},
		{"two kinds", actors.Spec{Mamba: mspec, Transformer: &actors.TransformerSpec{Metadata: tmeta, DType: tensor.Float32}}, "exactly one kind, got 2"},
		{"empty starts", actors.Spec{Transformer: &actors.TransformerSpec{Metadata: tmeta, DType: tensor.Float32, Starts: []int32{}}},
			"spec.Transformer.Starts is present but empty"},
		{"pool", actors.Spec{Paged: &actors.PagedSpec{DType: tensor.Float32, Pool: &pagemanager.PoolConfig{PrefixCaching: true}}}, "spec.Paged.Pool"},
		{"unknown quantization", actors.Spec{Paged: &actors.PagedSpec{DType: tensor.Float16, Quantization: 9}}, "has no wire form"},
		{"unknown transformer quantization", actors.Spec{Transformer: &actors.TransformerSpec{Metadata: tmeta, DType: tensor.Float16, Quantization: 9}},
			"spec.Transformer storage"},
		{"negative transformer block", actors.Spec{Transformer: &actors.TransformerSpec{Metadata: tmeta, DType: tensor.Float16,
			Quantization: tensor.NF4, BlockSize: -1}}, "(block size -1) has no wire form"},
		{"unknown mode", actors.Spec{Mamba: mspec, Mode: "__serve__"}, `spec.Mode is "__serve__": not a mode`},
		{"mesh name not UTF-8", actors.Spec{Mamba: mspec, PartitionAxis: &badMeshName}, `spec.PartitionAxis.tensor_parallel_axis is "t\xffp", which is not valid UTF-8`},
		{"rule name not UTF-8", actors.Spec{Mamba: mspec, PartitionAxis: &badRule}, `spec.PartitionAxis.kv_head_axis names "\xfe", which is not valid UTF-8`},
		{"zero mesh", actors.Spec{Mamba: mspec, Mesh: &sharding.Mesh{}}, "zero Mesh"},
		{"dtype", actors.Spec{Mamba: &actors.MambaSpec{Metadata: mmeta}}, "spec mamba dtype DType(0)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := specToProto(tc.spec)
			require.ErrorIs(t, err, actors.ErrInvalid)
			assert.ErrorContains(t, err, tc.msg)
		})
	}

	good := func() *messages.CacheSpec {
		p, err := specToProto(actors.Spec{Mamba: mspec})
		require.NoError(t, err)
		return p
	}
	pagedSpec, err := specToProto(actors.Spec{Paged: &actors.PagedSpec{DType: tensor.BFloat16, Quantization: tensor.Int8,
		Metadata: paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
			PageSize: 4, NumKVHeads: 1, KVHeadDimSize: 4, HBMUtilization: 0.5}}})
	require.NoError(t, err)
	pagedSpec.Storage.Quantization = 7
	_, err = specFromProto(viaWire(t, pagedSpec))
	require.ErrorIs(t, err, actors.ErrInvalid)
	assert.ErrorContains(t, err, "spec.storage.quantization 7 is not a quantization (want none, int8 or nf4)")
	contiguousSpec, err := specToProto(actors.Spec{Transformer: &actors.TransformerSpec{Metadata: tmeta, DType: tensor.BFloat16, Quantization: tensor.Int8}})
	require.NoError(t, err)
	contiguousSpec.Storage.Quantization = 7
	_, err = specFromProto(viaWire(t, contiguousSpec))
	require.ErrorIs(t, err, actors.ErrInvalid)
	assert.ErrorContains(t, err, "spec.storage.quantization 7 is not a quantization (want none, int8 or nf4)")

	for _, tc := range []struct {
		name string
		edit func(p *messages.CacheSpec)
		msg  string
	}{
		{"nil oneof", func(p *messages.CacheSpec) { p.Metadata = nil }, "spec.metadata is unset"},
		{"no storage", func(p *messages.CacheSpec) { p.Storage = nil }, "spec.storage.dtype DTYPE_UNSPECIFIED"},
		{"bad dtype", func(p *messages.CacheSpec) { p.Storage.Dtype = 42 }, "spec.storage.dtype 42 is not a tensor dtype"},
		{"quantized", func(p *messages.CacheSpec) {
			p.Storage.Quantization = messages.Quantization_QUANTIZATION_NF4
			p.Storage.BlockSize = 64
		},
			"spec.storage is quantized (QUANTIZATION_NF4, block size 64): only a transformer or paged cache's spec holds quantized storage"},
		{"starts on mamba", func(p *messages.CacheSpec) { p.TransformerStarts = []int32{1, 2} },
			"spec.transformer_starts has 2 entries on a spec that is not a transformer cache's"},
		{"unknown axis", func(p *messages.CacheSpec) { p.Mesh = map[string]int64{"xx": 2} }, `unknown mesh axis "xx"`},
		{"order without a mesh", func(p *messages.CacheSpec) { p.MeshOrder = []string{"tp"} }, "spec.mesh_order [tp] names axes of an empty mesh"},
		{"order missing an axis", func(p *messages.CacheSpec) { p.Mesh, p.MeshOrder = map[string]int64{"tp": 2, "dp": 2}, []string{"tp"} }, "spec.mesh"},
		{"axis size", func(p *messages.CacheSpec) { p.Mesh = map[string]int64{"tp": 0} }, `spec.mesh axis "tp" has size 0`},
		{"too many devices", func(p *messages.CacheSpec) { p.Mesh = map[string]int64{"tp": 1 << 11, "dp": 1 << 11} }, "more than 1048576 devices"},
		{"unknown mode", func(p *messages.CacheSpec) { p.Mode = 42 }, "spec.mode 42 is not a mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good()
			tc.edit(p)
			_, err := specFromProto(viaWire(t, p))
			require.ErrorIs(t, err, actors.ErrInvalid)
			assert.ErrorContains(t, err, tc.msg)
		})
	}
	_, err = specFromProto(nil)
	require.ErrorIs(t, err, actors.ErrInvalid)

	// A partition axis the runtime rejects still travels: the receiver's
	// NewCache reports it, as the sender's would.
	empty := sharding.DefaultPartitionAxis()
	empty.DataParallelAxis = ""
	p, err := specToProto(actors.Spec{Mamba: mspec, PartitionAxis: &empty})
	require.NoError(t, err)
	got, err := specFromProto(viaWire(t, p))
	require.NoError(t, err)
	assert.Equal(t, empty, *got.PartitionAxis)
}

// wireCase is one cache driven through a sequence of writes: each write is
// sent over the wire, and the original and the decoded copy are applied to
// the same views.
type wireCase struct {
	name   string
	spec   actors.Spec
	writes []actors.Write // applied to layer 1 (or 0 for one-layer caches), in order
	check  func(t *testing.T, want, got actors.Write)
}

func wireCases(t testing.TB) []wireCase {
	r := rand.New(rand.NewSource(3))

	// Contiguous: B 3, S 16, 2 heads of dim 4, bfloat16 cache.
	const tB, tS, tH, tD = 3, 16, 2, 4
	tmeta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: tB, SequenceLength: tS, NumHiddenLayers: 2,
		NumHeads: transformer.Ptr(tH), HeadDim: transformer.Ptr(tD)})
	require.NoError(t, err)
	boolsOf := func(n int) []bool {
		d := make([]bool, n)
		for i := range d {
			d[i] = r.Intn(4) != 0
		}
		return d
	}
	prefill := &actors.TransformerWrite{
		Query: wireRand(r, tensor.Float32, tB, 3, 2*tH, 3), Key: wireRand(r, tensor.Float32, tB, 3, tH, tD), Value: wireRand(r, tensor.Float64, tB, 3, tH, tD),
		Mask:    transformer.Mask{Shape: []int{tB, tS}, Data: boolsOf(tB * tS)},
		Options: transformer.ConcatOptions{CausalMask: transformer.CausalMask(tS), TokenTypeIDs: [][]int32{{0, 1, 1, 2}, {1, 1, 0, 0}, {2, 0, 2, 2}}},
	}
	chunk := &actors.TransformerWrite{
		Key: wireRand(r, tensor.BFloat16, tB, 2, tH, tD), Value: wireRand(r, tensor.BFloat16, tB, 2, tH, tD),
		Mask: transformer.Mask{Shape: []int{tB, 1, 2, tS}, Data: boolsOf(tB * 2 * tS)},
	}
	decode := &actors.TransformerWrite{
		Key: wireRand(r, tensor.Float64, tB, 1, tH, tD), Value: wireRand(r, tensor.Float16, tB, 1, tH, tD),
		Mask:    transformer.Mask{Shape: []int{tB, 1, 1, tS}, Data: boolsOf(tB * tS)},
		Options: transformer.ConcatOptions{CausalMask: transformer.CausalMask(tS + 4)},
	}

	// Paged: 2 slots, 4 tokens a page, 16 tokens a sequence, 2 heads of dim 4.
	const pH, pD = 2, 4
	pmeta := paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16, PageSize: 4,
		NumKVHeads: pH, KVHeadDimSize: pD, HBMUtilization: 0.5}
	tables := [][]int32{{3, 1, 6, 0}, {2, 5, 0, 0}}
	prefillOnly := &actors.PagedWrite{PrefillKey: wireRand(r, tensor.BFloat16, 6, pH, pD), PrefillValue: wireRand(r, tensor.BFloat16, 6, pH, pD),
		Step: paged.StepMetadata{PrefillLength: 6, PrefillPageTable: tables[0]}}
	mixed := &actors.PagedWrite{
		PrefillKey: wireRand(r, tensor.Float64, 4, pH, pD), PrefillValue: wireRand(r, tensor.Float64, 4, pH, pD),
		DecodeKey: wireRand(r, tensor.BFloat16, 2, pH, pD), DecodeValue: wireRand(r, tensor.BFloat16, 2, pH, pD),
		Step: paged.StepMetadata{PrefillLength: 7, PrefillPosition: []int32{3, 4, 5, 6}, PrefillPageTable: tables[1],
			DecodesPosition: []int32{6, -1}, DecodesPageTable: tables},
	}
	decodeOnly := &actors.PagedWrite{DecodeKey: wireRand(r, tensor.Float32, 2, pH, pD), DecodeValue: wireRand(r, tensor.Float32, 2, pH, pD),
		Step: paged.StepMetadata{DecodesPosition: []int32{7, 7}, DecodesPageTable: tables}}

	// Mamba: B 2, intermediate 3, state 4, kernel 4.
	mmeta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 3, SSMStateSize: 4, ConvKernelSize: 4})
	require.NoError(t, err)
	// Mamba2: B 2, intermediate 4, 2 heads of dim 2, state 2, kernel 3, 1 group (conv dim 8).
	m2meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, NumHeads: 2, HeadDim: 2,
		StateSize: 2, ConvKernelSize: 3, NGroups: 1})
	require.NoError(t, err)
	// Lightning: B 2, 3 heads, Dk 2, Dv 3.
	lmeta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: lightning.Ptr(2), NumHeads: lightning.Ptr(3),
		KeyDim: lightning.Ptr(2), ValueDim: lightning.Ptr(3)})
	require.NoError(t, err)

	// Stored rows: 5 tokens gathered from a view of the same storage, written
	// into another sequence's pages (NF4 with dim 8 and blocks of 4).
	storedCase := func(name string, ps actors.PagedSpec) wireCase {
		spec := actors.Spec{Paged: &ps}
		prefill := &actors.PagedWrite{PrefillKey: wireRand(r, tensor.Float32, 5, pH, ps.Metadata.KVHeadDimSize),
			PrefillValue: wireRand(r, tensor.Float32, 5, pH, ps.Metadata.KVHeadDimSize),
			Step:         paged.StepMetadata{PrefillLength: 5, PrefillPageTable: tables[0]}}
		views, err := spec.LayerViews()
		require.NoError(t, err)
		src, _, err := actors.Apply(views[0], prefill)
		require.NoError(t, err)
		rows, err := src.(paged.View).GatherStored(tables[0], 5)
		require.NoError(t, err)
		return wireCase{name: name, spec: spec,
			writes: []actors.Write{prefill, &actors.PagedStoredWrite{Rows: rows, Step: paged.StepMetadata{PrefillLength: 5, PrefillPageTable: tables[1]}}},
			check:  checkPagedOrStored}
	}
	nf4meta := pmeta
	nf4meta.KVHeadDimSize = 8

	return []wireCase{
		{name: "transformer", spec: actors.Spec{Transformer: &actors.TransformerSpec{Metadata: tmeta, DType: tensor.BFloat16}},
			writes: []actors.Write{prefill, chunk, decode},
			check: func(t *testing.T, want, got actors.Write) {
				w, g := want.(*actors.TransformerWrite), got.(*actors.TransformerWrite)
				requireSameTensor(t, "key", w.Key, g.Key)
				requireSameTensor(t, "value", w.Value, g.Value)
				assert.True(t, g.Query.IsZero(), "the query is not sent")
				assert.True(t, w.Mask.Equal(g.Mask), "mask")
				// The causal flag decodes as CausalMask(S), whatever size was sent.
				if w.Options.CausalMask.IsZero() {
					assert.True(t, g.Options.CausalMask.IsZero())
				} else {
					assert.True(t, transformer.CausalMask(tS).Equal(g.Options.CausalMask), "causal mask")
				}
				assert.Equal(t, w.Options.TokenTypeIDs, g.Options.TokenTypeIDs)
			}},
		{name: "paged", spec: actors.Spec{Paged: &actors.PagedSpec{Metadata: pmeta, DType: tensor.BFloat16}},
			writes: []actors.Write{prefillOnly, mixed, decodeOnly},
			check: func(t *testing.T, want, got actors.Write) {
				w, g := want.(*actors.PagedWrite), got.(*actors.PagedWrite)
				requireSameTensor(t, "prefill key", w.PrefillKey, g.PrefillKey)
				requireSameTensor(t, "prefill value", w.PrefillValue, g.PrefillValue)
				requireSameTensor(t, "decode key", w.DecodeKey, g.DecodeKey)
				requireSameTensor(t, "decode value", w.DecodeValue, g.DecodeValue)
				assert.Equal(t, w.Step, g.Step)
				assert.Equal(t, w.Step.HasPrefill(), g.Step.HasPrefill())
				assert.Equal(t, w.Step.HasDecodes(), g.Step.HasDecodes())
				assert.Equal(t, w.Step.PrefillPosition == nil, g.Step.PrefillPosition == nil)
			}},
		{name: "mamba", spec: actors.Spec{Mamba: &actors.MambaSpec{Metadata: mmeta, DType: tensor.Float32}},
			writes: []actors.Write{
				&actors.MambaWrite{ConvSSM: actors.ConvSSM{ConvWindow: wireRand(r, tensor.Float64, 2, 3, 4), SSMState: wireRand(r, tensor.BFloat16, 2, 3, 4)}},
				&actors.MambaWrite{ConvSSM: actors.ConvSSM{ConvColumn: wireRand(r, tensor.Float32, 2, 3), CachePosition: 3, SSMState: wireRand(r, tensor.Float64, 2, 3, 4)}},
				&actors.MambaWrite{ConvSSM: actors.ConvSSM{ConvColumn: wireRand(r, tensor.Float16, 2, 3), CachePosition: -1}},
			},
			check: func(t *testing.T, want, got actors.Write) {
				w, g := want.(*actors.MambaWrite), got.(*actors.MambaWrite)
				requireSameConvSSM(t, w.ConvSSM, g.ConvSSM)
			}},
		{name: "mamba2", spec: actors.Spec{Mamba2: &actors.Mamba2Spec{Metadata: m2meta, DType: tensor.BFloat16}},
			writes: []actors.Write{
				&actors.Mamba2Write{ConvSSM: actors.ConvSSM{ConvWindow: wireRand(r, tensor.Float32, 2, 8, 3), SSMState: wireRand(r, tensor.Float64, 2, 2, 2, 2)}, AdvanceSeq: 5},
				&actors.Mamba2Write{ConvSSM: actors.ConvSSM{ConvColumn: wireRand(r, tensor.BFloat16, 2, 8), CachePosition: 2}, AdvanceSeq: 1},
				&actors.Mamba2Write{ConvSSM: actors.ConvSSM{SSMState: wireRand(r, tensor.Float32, 2, 2, 2, 2)}},
			},
			check: func(t *testing.T, want, got actors.Write) {
				w, g := want.(*actors.Mamba2Write), got.(*actors.Mamba2Write)
				requireSameConvSSM(t, w.ConvSSM, g.ConvSSM)
				assert.Equal(t, w.AdvanceSeq, g.AdvanceSeq)
			}},
		{name: "lightning", spec: actors.Spec{Lightning: &actors.LightningSpec{Layers: 2, Metadata: lmeta, DType: tensor.Float32}},
			writes: []actors.Write{
				&actors.LightningWrite{Key: wireRand(r, tensor.Float64, 2, 3, 4, 2), Value: wireRand(r, tensor.BFloat16, 2, 3, 4, 3), SlopeRate: []float64{0.5, 0.25, 1.0 / 3}},
				&actors.LightningWrite{KeyValue: wireRand(r, tensor.Float32, 2, 3, 2, 3)},
				&actors.LightningWrite{Key: wireRand(r, tensor.Float32, 2, 3, 1, 2), Value: wireRand(r, tensor.Float32, 2, 3, 1, 3), SlopeRate: []float64{1e-3, math.Pi, 2}},
			},
			check: func(t *testing.T, want, got actors.Write) {
				w, g := want.(*actors.LightningWrite), got.(*actors.LightningWrite)
				requireSameTensor(t, "key", w.Key, g.Key)
				requireSameTensor(t, "value", w.Value, g.Value)
				requireSameTensor(t, "key_value", w.KeyValue, g.KeyValue)
				assert.Equal(t, w.SlopeRate, g.SlopeRate)
			}},
		storedCase("paged stored", actors.PagedSpec{Metadata: pmeta, DType: tensor.BFloat16}),
		storedCase("paged stored int8", actors.PagedSpec{Metadata: pmeta, DType: tensor.BFloat16, Quantization: tensor.Int8}),
		storedCase("paged stored nf4", actors.PagedSpec{Metadata: nf4meta, DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 4}),
	}
}

// checkPagedOrStored compares a paged write or a stored-rows paged write
// with its decoded copy, field by field.
func checkPagedOrStored(t *testing.T, want, got actors.Write) {
	switch w := want.(type) {
	case *actors.PagedWrite:
		g, ok := got.(*actors.PagedWrite)
		require.True(t, ok, "decoded %T", got)
		requireSameTensor(t, "prefill key", w.PrefillKey, g.PrefillKey)
		requireSameTensor(t, "prefill value", w.PrefillValue, g.PrefillValue)
		assert.Equal(t, w.Step, g.Step)
	case *actors.PagedStoredWrite:
		g, ok := got.(*actors.PagedStoredWrite)
		require.True(t, ok, "decoded %T", got)
		assert.Equal(t, w.Rows.Storage, g.Rows.Storage)
		requireSameTensor(t, "key", w.Rows.Key, g.Rows.Key)
		requireSameTensor(t, "value", w.Rows.Value, g.Rows.Value)
		requireSameTensor(t, "key scales", w.Rows.KeyScales, g.Rows.KeyScales)
		requireSameTensor(t, "value scales", w.Rows.ValueScales, g.Rows.ValueScales)
		assert.Equal(t, w.Step, g.Step)
		assert.Nil(t, g.Step.PrefillPosition)
		assert.False(t, g.Step.HasDecodes())
	default:
		t.Fatalf("unexpected write %T", want)
	}
}

func requireSameConvSSM(t *testing.T, want, got actors.ConvSSM) {
	t.Helper()
	requireSameTensor(t, "conv column", want.ConvColumn, got.ConvColumn)
	requireSameTensor(t, "conv window", want.ConvWindow, got.ConvWindow)
	requireSameTensor(t, "ssm state", want.SSMState, got.SSMState)
	assert.Equal(t, want.CachePosition, got.CachePosition)
}

// TestWireWriteRoundTrip sends every write (and its cache's spec) over
// the wire, compares the decoded write field by field, applies the
// original and the copy to the same view with the embedded runtime's own
// code and requires byte-identical views and results; a transformer
// write's result also travels as a WriteLayerReply.
func TestWireWriteRoundTrip(t *testing.T) {
	for _, tc := range wireCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			sp, err := specToProto(tc.spec)
			require.NoError(t, err)
			spec, err := specFromProto(viaWire(t, sp))
			require.NoError(t, err)
			views, err := spec.LayerViews()
			require.NoError(t, err)
			require.Len(t, views, 2)
			want, got := views[1], views[1]
			for i, w := range tc.writes {
				p, err := writeToProto(1, w)
				require.NoError(t, err, "write %d", i)
				p = viaWire(t, p)
				assert.Equal(t, uint32(1), p.Layer)
				dec, err := writeFromProto(p, spec)
				require.NoError(t, err, "write %d", i)
				tc.check(t, w, dec)

				var wr, gr actors.Result
				want, wr, err = actors.Apply(want, w)
				require.NoError(t, err, "write %d: original", i)
				got, gr, err = actors.Apply(got, dec)
				require.NoError(t, err, "write %d: copy", i)
				requireSameView(t, fmt.Sprintf("after write %d", i), want, got)
				requireSameTensor(t, "result key", wr.Key, gr.Key)
				requireSameTensor(t, "result value", wr.Value, gr.Value)
				require.True(t, wr.Mask.Equal(gr.Mask), "result mask")

				rp, err := resultToProto(wr)
				require.NoError(t, err)
				back, err := resultFromProto(viaWire(t, rp))
				require.NoError(t, err)
				requireSameTensor(t, "sent result key", wr.Key, back.Key)
				requireSameTensor(t, "sent result value", wr.Value, back.Value)
				require.True(t, wr.Mask.Equal(back.Mask), "sent result mask")
				assert.Nil(t, back.View)
				if tc.name == "transformer" {
					require.False(t, back.Key.IsZero())
					require.Equal(t, 4, back.Mask.Rank())
				}
			}
		})
	}
}

// A stored-rows write into a quantized paged layer cut over a mesh (kv
// heads over tp 2, dp 2) is cut by actors.SplitWrite as the clustered
// client cuts it: every part crosses the wire and, applied to its part
// view, gives the view the original part gives, byte for byte; joined,
// the parts are the view the whole write gives the unsharded layer, byte
// for byte, and hold the sequence's codes and scales.
func TestWirePagedStoredSharded(t *testing.T) {
	for _, tc := range []struct {
		name string
		ps   actors.PagedSpec
	}{
		{"int8", actors.PagedSpec{DType: tensor.BFloat16, Quantization: tensor.Int8}},
		{"nf4", actors.PagedSpec{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 4}},
		{"unquantized", actors.PagedSpec{DType: tensor.Float16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(8))
			tc.ps.Metadata = paged.Metadata{BatchSize: 2, NumHiddenLayers: 1, NumPagesPerLayer: 8, NumPagesPerSequence: 4, MaxSequences: 16, PageSize: 4,
				NumKVHeads: 4, KVHeadDimSize: 8, HBMUtilization: 0.5}
			flat := actors.Spec{Paged: &tc.ps}
			srcViews, err := flat.LayerViews()
			require.NoError(t, err)
			src, _, err := actors.Apply(srcViews[0], &actors.PagedWrite{PrefillKey: wireRand(r, tensor.Float32, 7, 4, 8), PrefillValue: wireRand(r, tensor.Float32, 7, 4, 8),
				Step: paged.StepMetadata{PrefillLength: 7, PrefillPageTable: []int32{2, 5}}})
			require.NoError(t, err)
			rows, err := src.(paged.View).GatherStored([]int32{2, 5}, 7)
			require.NoError(t, err)
			w := &actors.PagedStoredWrite{Rows: rows, Step: paged.StepMetadata{PrefillLength: 7, PrefillPageTable: []int32{6, 1}}}
			// Fresh views: a write claims a never-written page of its base's
			// pool in place, so the source's pages would show in views it
			// was not applied to.
			views, err := flat.LayerViews()
			require.NoError(t, err)
			want, _, err := actors.Apply(views[0], w)
			require.NoError(t, err)

			sharded := flat
			sharded.Mesh = wireMesh(t, map[string]int{sharding.DP: 2, sharding.TP: 2})
			sharded.PartitionAxis = wireKVHeadsOverTP()
			layouts, err := sharded.ShardedViews()
			require.NoError(t, err)
			parts, err := actors.SplitWrite(w, layouts[0])
			require.NoError(t, err)
			require.Len(t, parts, 4)
			next, orig := make([]any, len(parts)), make([]any, len(parts))
			for i, part := range parts {
				orig[i], _, err = actors.Apply(layouts[0].Parts()[i], part)
				require.NoError(t, err, "part %d", i)
				p, err := writeToProto(0, part)
				require.NoError(t, err, "part %d", i)
				dec, err := writeFromProto(viaWire(t, p), sharded)
				require.NoError(t, err, "part %d", i)
				checkPagedOrStored(t, part, dec)
				next[i], _, err = actors.Apply(layouts[0].Parts()[i], dec)
				require.NoError(t, err, "part %d", i)
				requireSameView(t, fmt.Sprintf("part %d", i), orig[i], next[i])
			}
			joined, err := layouts[0].WithParts(next)
			require.NoError(t, err)
			got, err := joined.Join()
			require.NoError(t, err)
			requireSameView(t, "joined", want, got)
			wantRows, err := want.(paged.View).GatherStored([]int32{6, 1}, 7)
			require.NoError(t, err)
			gotRows, err := got.(paged.View).GatherStored([]int32{6, 1}, 7)
			require.NoError(t, err)
			checkPagedOrStored(t, &actors.PagedStoredWrite{Rows: wantRows}, &actors.PagedStoredWrite{Rows: gotRows})
		})
	}
}

// TestWireRuntimeEquivalence drives two embedded caches, one with the
// writes and one with their wire copies, and requires the same views.
func TestWireRuntimeEquivalence(t *testing.T) {
	rt, err := actors.NewRuntime()
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close() })
	ctx := t.Context()
	for _, tc := range wireCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			a, err := rt.NewCache(tc.name+"/original", tc.spec)
			require.NoError(t, err)
			b, err := rt.NewCache(tc.name+"/wire", tc.spec)
			require.NoError(t, err)
			for i, w := range tc.writes {
				p, err := writeToProto(1, w)
				require.NoError(t, err)
				dec, err := writeFromProto(viaWire(t, p), tc.spec)
				require.NoError(t, err)
				_, ra, err := a.Step(ctx, uint64(i), []actors.LayerWrite{{Layer: 1, Write: w}})
				require.NoError(t, err)
				_, rb, err := b.Step(ctx, uint64(i), []actors.LayerWrite{{Layer: 1, Write: dec}})
				require.NoError(t, err)
				requireSameTensor(t, "result key", ra[0].Key, rb[0].Key)
				require.True(t, ra[0].Mask.Equal(rb[0].Mask))
				va, err := a.Current(ctx)
				require.NoError(t, err)
				vb, err := b.Current(ctx)
				require.NoError(t, err)
				for l := range va.Views {
					requireSameView(t, fmt.Sprintf("write %d layer %d", i, l), va.Views[l], vb.Views[l])
				}
			}
		})
	}
}

func TestWireWriteToProtoErrors(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	key := wireRand(r, tensor.Float32, 2, 3, 1, 2)
	notCausal := transformer.CausalMask(4)
	notCausal.Data[1] = true
	rowCausal := transformer.Mask{Shape: []int{2, 1, 4, 4}, Data: append(transformer.CausalMask(4).Data, transformer.CausalMask(4).Data...)}
	for _, tc := range []struct {
		name  string
		layer int
		w     actors.Write
		msg   string
	}{
		{"insert slot", 0, &actors.InsertWrite{Slot: -1}, "layer 0: insert slot -1 is out of the wire's range"},
		{"stored rows dtype", 1, &actors.PagedStoredWrite{Rows: paged.Stored{Storage: paged.Storage{Quantization: tensor.Int8}}},
			"layer 1: actors: invalid request: paged_stored.storage.dtype DType(0) is not a tensor dtype"},
		{"stored rows quantization", 1, &actors.PagedStoredWrite{Rows: paged.Stored{Storage: paged.Storage{DType: tensor.BFloat16, Quantization: 9}}},
			"layer 1: actors: invalid request: paged_stored storage bfloat16 Quantization(9) (block size 0) has no wire form"},
		{"stored rows block size", 0, &actors.PagedStoredWrite{Rows: paged.Stored{Storage: paged.Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: -2}}},
			"paged_stored storage bfloat16 NF4"},
		{"stored rows step", 0, &actors.PagedStoredWrite{Rows: paged.Stored{Storage: paged.Storage{DType: tensor.BFloat16}},
			Step: paged.StepMetadata{PrefillPosition: []int32{}, PrefillPageTable: []int32{1}}},
			"paged_stored.step.prefill_position is present but empty"},
		{"nil stored rows", 0, (*actors.PagedStoredWrite)(nil), "write *actors.PagedStoredWrite"},
		{"nil", 0, nil, "write <nil> (<nil>) cannot be sent"},
		{"nil pointer", 2, (*actors.PagedWrite)(nil), "layer 2: write *actors.PagedWrite"},
		{"negative layer", -1, &actors.LightningWrite{}, "layer -1 is out of the wire's range"},
		{"query", 0, &actors.TransformerWrite{Query: wireRand(r, tensor.Float32, 2, 4, 1, 2), Key: key, Value: key},
			"transformer.query has shape [2 4 1 2] and key [2 3 1 2]"},
		{"causal mask not triangular", 0, &actors.TransformerWrite{Key: key, Value: key, Options: transformer.ConcatOptions{CausalMask: notCausal}},
			"transformer.options.causal_mask of shape [1 1 4 4] is not"},
		{"causal mask per row", 0, &actors.TransformerWrite{Key: key, Value: key, Options: transformer.ConcatOptions{CausalMask: rowCausal}},
			"transformer.options.causal_mask of shape [2 1 4 4]"},
		{"bad attention mask", 0, &actors.TransformerWrite{Key: key, Value: key, Mask: transformer.Mask{Shape: []int{2, 4}, Data: make([]bool, 7)}},
			"transformer.attention_mask: mask of shape [2 4] holds 7 values (want 8)"},
		{"empty token types", 0, &actors.TransformerWrite{Key: key, Value: key, Options: transformer.ConcatOptions{TokenTypeIDs: [][]int32{}}},
			"transformer.options.token_type_ids is present with no rows"},
		{"empty prefill position", 0, &actors.PagedWrite{Step: paged.StepMetadata{PrefillPosition: []int32{}, PrefillPageTable: []int32{1}}},
			"paged.step.prefill_position is present but empty"},
		{"decode table without positions", 0, &actors.PagedWrite{Step: paged.StepMetadata{DecodesPageTable: [][]int32{}}},
			"paged.step.decodes_page_table is present=true with 0 rows while decodes_position is present=false"},
		{"decode positions without table", 0, &actors.PagedWrite{Step: paged.StepMetadata{DecodesPosition: []int32{1}}},
			"paged.step.decodes_page_table is present=false"},
		{"cache position", 0, &actors.MambaWrite{ConvSSM: actors.ConvSSM{CachePosition: math.MaxInt32 + 1}}, "conv_ssm.cache_position 2147483648 does not fit int32"},
		{"advance seq", 0, &actors.Mamba2Write{AdvanceSeq: math.MinInt32 - 1}, "conv_ssm.advance_seq -2147483649 does not fit int32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := writeToProto(tc.layer, tc.w)
			require.ErrorIs(t, err, actors.ErrInvalid)
			assert.ErrorContains(t, err, tc.msg)
		})
	}
}

// An InsertWrite travels as its slot and its view's snapshot: the decoded
// write has the same slot and a view with the same bytes, and inserts the
// same rows.
func TestWireInsertRoundTrip(t *testing.T) {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(2), HeadDim: transformer.Ptr(4)})
	require.NoError(t, err)
	pre, err := transformer.Init(meta, tensor.BFloat16, []int32{2, 0})
	require.NoError(t, err)
	v, err := pre.View(0)
	require.NoError(t, err)
	r := rand.New(rand.NewSource(5))
	v, err = v.Append(wireRand(r, tensor.BFloat16, 2, 3, 2, 4), wireRand(r, tensor.BFloat16, 2, 3, 2, 4))
	require.NoError(t, err)
	w := &actors.InsertWrite{Slot: 1, Other: v}
	p, err := writeToProto(0, w)
	require.NoError(t, err)
	big := meta
	big.BatchSize = 4
	spec := actors.Spec{Transformer: &actors.TransformerSpec{DType: tensor.BFloat16, Metadata: big}}
	dec, err := writeFromProto(viaWire(t, p), spec)
	require.NoError(t, err)
	got, ok := dec.(*actors.InsertWrite)
	require.True(t, ok, "decoded %T", dec)
	assert.Equal(t, 1, got.Slot)
	requireSameView(t, "inserted view", v, got.Other)

	views, err := spec.LayerViews()
	require.NoError(t, err)
	want, _, err := actors.Apply(views[0], w)
	require.NoError(t, err)
	have, _, err := actors.Apply(views[0], got)
	require.NoError(t, err)
	requireSameView(t, "after the insert", want, have)
}

func TestWireWriteFromProtoErrors(t *testing.T) {
	mspec := actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32}}
	tspec := actors.Spec{Transformer: &actors.TransformerSpec{DType: tensor.Float32, Metadata: transformer.Metadata{SequenceLength: 4}}}
	pspec := actors.Spec{Paged: &actors.PagedSpec{DType: tensor.Float32}}
	lspec := actors.Spec{Lightning: &actors.LightningSpec{DType: tensor.Float32}}
	f32 := func(data []byte, shape ...int64) *messages.Tensor {
		return &messages.Tensor{Dtype: messages.DType_DTYPE_FLOAT32, Shape: shape, Data: data}
	}
	for _, tc := range []struct {
		name string
		p    *messages.LayerWrite
		spec actors.Spec
		msg  string
		kind bool
	}{
		{"nil oneof", &messages.LayerWrite{Layer: 3}, mspec, "layer 3: actors: invalid request: write is unset", false},
		{"insert kind", &messages.LayerWrite{Write: &messages.LayerWrite_Insert{Insert: &messages.InsertWrite{}}}, mspec,
			"an insert write for a mamba cache", true},
		{"insert view", &messages.LayerWrite{Write: &messages.LayerWrite_Insert{Insert: &messages.InsertWrite{Slot: 1, View: []byte("not a snapshot")}}}, tspec,
			"insert.view: ", false},
		{"kind", &messages.LayerWrite{Write: &messages.LayerWrite_Lightning{Lightning: &messages.LightningWrite{}}}, mspec,
			"a lightning write for a mamba cache", true},
		{"conv_ssm kind", &messages.LayerWrite{Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{}}}, tspec,
			"a conv_ssm write for a transformer cache", true},
		{"advance_seq on mamba", &messages.LayerWrite{Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{AdvanceSeq: 2}}}, mspec,
			"conv_ssm.advance_seq is 2 for a Mamba layer", false},
		{"unspecified dtype", &messages.LayerWrite{Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{SsmState: &messages.Tensor{Shape: []int64{1}}}}}, mspec,
			"conv_ssm.ssm_state: dtype DTYPE_UNSPECIFIED is not a tensor dtype", false},
		{"bad dtype", &messages.LayerWrite{Write: &messages.LayerWrite_Lightning{Lightning: &messages.LightningWrite{KeyValue: &messages.Tensor{Dtype: 77}}}}, lspec,
			"lightning.key_value: dtype 77 is not a tensor dtype", false},
		{"shape and data", &messages.LayerWrite{Write: &messages.LayerWrite_Transformer{Transformer: &messages.TransformerWrite{Value: f32(make([]byte, 20), 2, 3)}}}, tspec,
			"transformer.value: 20 bytes of data for a float32 tensor of shape [2 3] (want 24)", false},
		{"negative dimension", &messages.LayerWrite{Write: &messages.LayerWrite_Paged{Paged: &messages.PagedWrite{DecodeKey: f32(nil, 2, -1)}}}, pspec,
			"paged.decode_key: dimension 1 of shape [2 -1] is negative", false},
		{"huge shape", &messages.LayerWrite{Write: &messages.LayerWrite_Paged{Paged: &messages.PagedWrite{PrefillKey: f32(nil, 1<<40, 1<<40)}}}, pspec,
			"paged.prefill_key: shape [1099511627776 1099511627776] has more than", false},
		{"mask byte", &messages.LayerWrite{Write: &messages.LayerWrite_Transformer{Transformer: &messages.TransformerWrite{
			AttentionMask: &messages.BoolTensor{Shape: []int64{1, 3}, Data: []byte{1, 2, 0}}}}}, tspec,
			"transformer.attention_mask: byte 1 is 2 (want 0 or 1)", false},
		{"mask size", &messages.LayerWrite{Write: &messages.LayerWrite_Transformer{Transformer: &messages.TransformerWrite{
			AttentionMask: &messages.BoolTensor{Shape: []int64{2, 3}, Data: []byte{1}}}}}, tspec,
			"transformer.attention_mask: 1 bytes of data for a mask of shape [2 3] (want 6)", false},
		{"prefill table without has_prefill", &messages.LayerWrite{Write: &messages.LayerWrite_Paged{Paged: &messages.PagedWrite{
			Step: &messages.PagedStep{PrefillPageTable: []int32{1, 2}}}}}, pspec,
			"paged.step.prefill_page_table has 2 entries but has_prefill is false", false},
		{"stored rows kind", &messages.LayerWrite{Write: &messages.LayerWrite_PagedStored{PagedStored: &messages.PagedStoredWrite{}}}, tspec,
			"a paged_stored write for a transformer cache", true},
		{"stored rows without storage", &messages.LayerWrite{Layer: 2, Write: &messages.LayerWrite_PagedStored{PagedStored: &messages.PagedStoredWrite{}}}, pspec,
			"layer 2: actors: invalid request: paged_stored.storage is unset", false},
		{"stored rows dtype", &messages.LayerWrite{Write: &messages.LayerWrite_PagedStored{PagedStored: &messages.PagedStoredWrite{
			Storage: &messages.Storage{Dtype: 99}}}}, pspec,
			"paged_stored.storage.dtype 99 is not a tensor dtype", false},
		{"stored rows quantization", &messages.LayerWrite{Write: &messages.LayerWrite_PagedStored{PagedStored: &messages.PagedStoredWrite{
			Storage: &messages.Storage{Dtype: messages.DType_DTYPE_BFLOAT16, Quantization: 7}}}}, pspec,
			"paged_stored.storage.quantization 7 is not a quantization", false},
		{"stored rows scales", &messages.LayerWrite{Write: &messages.LayerWrite_PagedStored{PagedStored: &messages.PagedStoredWrite{
			Storage:   &messages.Storage{Dtype: messages.DType_DTYPE_BFLOAT16, Quantization: messages.Quantization_QUANTIZATION_INT8},
			KeyScales: f32(make([]byte, 4), 2)}}}, pspec,
			"paged_stored.key_scales: 4 bytes of data for a float32 tensor of shape [2] (want 8)", false},
		{"stored rows step", &messages.LayerWrite{Write: &messages.LayerWrite_PagedStored{PagedStored: &messages.PagedStoredWrite{
			Storage: &messages.Storage{Dtype: messages.DType_DTYPE_BFLOAT16}, Step: &messages.PagedStep{PrefillPageTable: []int32{1}}}}}, pspec,
			"paged_stored.step.prefill_page_table has 1 entries but has_prefill is false", false},
		{"decode positions without has_decodes", &messages.LayerWrite{Write: &messages.LayerWrite_Paged{Paged: &messages.PagedWrite{
			Step: &messages.PagedStep{DecodesPosition: []int32{1}}}}}, pspec,
			"paged.step.decodes_position has 1 entries but has_decodes is false", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := writeFromProto(viaWire(t, tc.p), tc.spec)
			require.ErrorIs(t, err, actors.ErrInvalid)
			assert.ErrorContains(t, err, tc.msg)
			assert.Equal(t, tc.kind, errors.Is(err, actors.ErrKind), "wraps ErrKind")
		})
	}
	_, err := writeFromProto(nil, mspec)
	require.ErrorIs(t, err, actors.ErrInvalid)
}

func TestWireResult(t *testing.T) {
	_, err := resultToProto(actors.Result{Parts: make([]actors.Result, 2)})
	require.ErrorIs(t, err, actors.ErrInvalid)
	assert.ErrorContains(t, err, "result.parts has 2 parts")

	p, err := resultToProto(actors.Result{View: "not sent"})
	require.NoError(t, err)
	assert.Equal(t, messages.Code_CODE_OK, p.GetStatus().GetCode())
	assert.Nil(t, p.Key)
	r, err := resultFromProto(viaWire(t, p))
	require.NoError(t, err)
	assert.True(t, r.Key.IsZero() && r.Value.IsZero() && r.Mask.IsZero())

	_, err = resultFromProto(&messages.WriteLayerReply{Status: &messages.Status{Code: messages.Code_CODE_STALE_VERSION, Message: "stale: base 3"}})
	require.ErrorIs(t, err, actors.ErrStale)
	assert.EqualError(t, err, "stale: base 3")

	_, err = resultFromProto(&messages.WriteLayerReply{Mask: &messages.BoolTensor{Shape: []int64{2}, Data: []byte{0, 9}}})
	require.ErrorIs(t, err, actors.ErrInvalid)
	assert.ErrorContains(t, err, "result.mask: byte 1 is 9")
	_, err = resultFromProto(nil)
	require.ErrorIs(t, err, actors.ErrInvalid)
}

// TestWireCausalMemo checks isCausal on its own: the memo of the last
// accepted mask accepts the same mask again, and does not make another
// mask of the same size (one element off) pass; and one decoded causal
// mask is shared per sequence length.
func TestWireCausalMemo(t *testing.T) {
	m := transformer.CausalMask(8)
	require.True(t, isCausal(m))
	require.True(t, isCausal(m))
	other := transformer.CausalMask(8)
	other.Data[3] = true
	assert.False(t, isCausal(other))
	assert.True(t, isCausal(transformer.CausalMask(0)))
	assert.False(t, isCausal(transformer.Mask{Shape: []int{1, 1, 2, 3}, Data: make([]bool, 6)}))
	assert.Same(t, &causalMask(16).Data[0], &causalMask(16).Data[0], "one mask per length")
}

func BenchmarkWireWrite(b *testing.B) {
	r := rand.New(rand.NewSource(5))
	const B, H, D, S = 8, 8, 128, 2048
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: B, SequenceLength: S, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(H), HeadDim: transformer.Ptr(D)})
	require.NoError(b, err)
	spec := actors.Spec{Transformer: &actors.TransformerSpec{Metadata: meta, DType: tensor.BFloat16}}
	causal := transformer.CausalMask(S)
	for _, q := range []int{1, 128} {
		w := &actors.TransformerWrite{Key: wireRand(r, tensor.BFloat16, B, q, H, D), Value: wireRand(r, tensor.BFloat16, B, q, H, D),
			Options: transformer.ConcatOptions{CausalMask: causal}}
		b.Run(fmt.Sprintf("q=%d", q), func(b *testing.B) {
			b.SetBytes(int64(2 * w.Key.NumBytes()))
			for b.Loop() {
				p, err := writeToProto(0, w)
				if err != nil {
					b.Fatal(err)
				}
				data, err := proto.Marshal(p)
				if err != nil {
					b.Fatal(err)
				}
				var back messages.LayerWrite
				if err := proto.Unmarshal(data, &back); err != nil {
					b.Fatal(err)
				}
				if _, err := writeFromProto(&back, spec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
