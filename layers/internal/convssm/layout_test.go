package convssm

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

var errMeta = errors.New("test: invalid metadata")

// lmeta sizes a State of batch B, 2 channels, kernel 3 and an SSM state
// (B, 2).
type lmeta struct {
	B int `json:"b"`
}

var layout = Layout[lmeta]{
	ShardOps: shards,
	Validate: func(m lmeta) error {
		return CheckMetadata(errMeta, Sizes{{"b", m.B}}, 0, nil)
	},
	Shapes: func(m lmeta) (conv, ssm []int) { return []int{m.B, 2, 3}, []int{m.B, 2} },
	ShardMeta: func(o ShardOps, m lmeta, s Specs, mesh sharding.Mesh) (lmeta, error) {
		if err := o.CheckFit(s, []int{m.B, 2, 3}, []int{m.B, 2}, mesh); err != nil {
			return lmeta{}, err
		}
		if s.Conv[1].Blocks(mesh) > 1 {
			return lmeta{}, fmt.Errorf("%w: channels cut", o.Sharding)
		}
		return lmeta{B: m.B / s.Conv[0].Blocks(mesh)}, nil
	},
}

func TestLayoutNew(t *testing.T) {
	st, err := layout.New(lmeta{B: 3}, tensor.Float16)
	require.NoError(t, err)
	assert.True(t, st.Conv.HasShape(3, 2, 3) && st.SSM.HasShape(3, 2))
	assert.Equal(t, tensor.Float16, st.DType())

	_, err = layout.New(lmeta{B: 0}, tensor.Float16)
	require.ErrorIs(t, err, errMeta, "the metadata is checked first")
	_, err = layout.New(lmeta{B: 0}, 0)
	require.ErrorIs(t, err, errMeta)
	_, err = layout.New(lmeta{B: 1}, 0)
	require.ErrorIs(t, err, errDType)
}

func TestLayoutShards(t *testing.T) {
	m := testkit.Mesh(t, map[string]int{"dp": 2, "tp": 2})
	meta := lmeta{B: 4}
	st := filled(t, tensor.Float32, 4)
	pa := sharding.DefaultPartitionAxis()
	axes, pos := sharding.RecurrentStateAxes(), sharding.TransformerIndexAxes()

	s, err := layout.Specs(st, meta, pa, sharding.ModeDecode, m, axes, pos)
	require.NoError(t, err)
	assert.Equal(t, "PartitionSpec(None, 'tp', None)", s.Conv.String(), "tp 2 divides the 2 channels")
	_, err = layout.Specs(State{}, meta, pa, sharding.ModeDecode, m, axes, pos)
	require.ErrorIs(t, err, errEmpty)
	assert.EqualError(t, err, "test: empty view: Specs on an empty view")

	_, _, err = layout.Split(st, meta, s, m)
	require.ErrorIs(t, err, errSharding)
	assert.EqualError(t, err, "test: bad sharding: channels cut", "ShardMeta's rules apply")
	_, _, err = layout.Split(State{}, meta, s, m)
	assert.EqualError(t, err, "test: empty view: Split on an empty view")

	s = Specs{Conv: spec("dp", "", ""), SSM: spec("dp", ""), Positions: spec("dp")}
	sm, parts, err := layout.Split(st, meta, s, m)
	require.NoError(t, err)
	assert.Equal(t, lmeta{B: 2}, sm)
	require.Len(t, parts, 4)
	assert.True(t, parts[3].Conv.HasShape(2, 2, 3))

	var agreed []int
	back, err := layout.Join(parts, meta, s, m, func(i int) error { agreed = append(agreed, i); return nil })
	require.NoError(t, err)
	assert.True(t, back.Conv.Equal(st.Conv) && back.SSM.Equal(st.SSM))
	assert.Equal(t, st.Positions, back.Positions)
	assert.Equal(t, []int{0, 1, 2, 3}, agreed)

	none := func(int) error { return nil }
	_, err = layout.Join(parts, lmeta{}, s, m, none)
	require.ErrorIs(t, err, errMeta, "the full metadata is checked first")
	_, err = layout.Join(parts, meta, Specs{Conv: spec("", "tp", ""), SSM: s.SSM, Positions: s.Positions}, m, none)
	assert.EqualError(t, err, "test: bad sharding: channels cut", "then the specs")
	_, err = layout.Join(parts[:2], meta, s, m, none)
	assert.EqualError(t, err, "test: bad sharding: 2 shard views for a mesh of 4 devices", "then the parts")
}

func TestLayoutSnapshotEntries(t *testing.T) {
	type view struct {
		meta  lmeta
		layer layerlist.Index
		st    State
	}
	codec := viewsnap.Codec[State]{
		ViewFormat: "test.View/v1", CacheFormat: "test.Cache/v1", Err: errSnapshot,
		Fields: []string{"metadata", "layer_index", "conv_states", "ssm_states", "positions"},
	}
	var got view
	five := 5
	for _, want := range []view{{lmeta{B: 2}, layerlist.IndexOf(&five), filled(t, tensor.BFloat16, 2)}, {lmeta{B: 1}, layerlist.Index{}, filled(t, tensor.Float32, 1)}} {
		c := codec
		c.Put = func(e viewsnap.Entry, st State) error { return layout.Put(e, want.meta, want.layer, st) }
		c.Get = func(e viewsnap.Entry) (State, error) {
			meta, layer, err := layout.GetHeader(e)
			if err != nil {
				return State{}, err
			}
			st, err := layout.GetState(e, meta)
			got = view{meta, layer, st}
			return st, err
		}
		data, err := c.MarshalView(want.st)
		require.NoError(t, err)
		_, err = c.UnmarshalView(data)
		require.NoError(t, err)
		assert.Equal(t, want.meta, got.meta)
		assert.Equal(t, want.layer, got.layer)
		assert.True(t, got.st.Conv.Equal(want.st.Conv) && got.st.SSM.Equal(want.st.SSM))
		assert.Equal(t, want.st.Positions, got.st.Positions)

		for _, tc := range []struct {
			name  string
			field string
			value string
			is    error
		}{
			{"invalid metadata", "metadata", `{"b":0}`, errMeta},
			{"metadata of other shapes", "metadata", `{"b":3}`, errShape},
			{"bad layer index", "layer_index", "x", errSnapshot},
		} {
			_, err := c.UnmarshalView(testkit.EditSnapshot(t, data, func(s *tensor.Snapshot) { s.Metadata["views.0."+tc.field] = tc.value }))
			require.ErrorIs(t, err, errSnapshot, tc.name)
			require.ErrorIs(t, err, tc.is, tc.name)
		}
	}
}

func TestCheckMetadata(t *testing.T) {
	sizes := func(a, b int) Sizes { return Sizes{{"a_size", a}, {"b_size", b}} }
	for _, tc := range []struct {
		name   string
		sizes  Sizes
		layers int
		axis   json.RawMessage
		want   string // "" = valid
	}{
		{"valid", sizes(1, 2), 3, json.RawMessage(`{"batch_axis":"dp"}`), ""},
		{"no layers, no axis", sizes(1, 2), 0, nil, ""},
		{"zero", sizes(0, 2), 1, nil, "test: invalid metadata: a_size must be positive (got 0)"},
		{"negative", sizes(1, -2), 1, nil, "test: invalid metadata: b_size must be positive (got -2)"},
		{"sizes in order", sizes(-1, 0), 1, nil, "test: invalid metadata: a_size must be positive (got -1)"},
		{"negative layers", sizes(1, 2), -1, nil, "test: invalid metadata: num_hidden_layers must not be negative (got -1)"},
		{"sizes before layers", sizes(1, 0), -1, nil, "test: invalid metadata: b_size must be positive (got 0)"},
		{"layers before the axis", sizes(1, 1), -1, json.RawMessage(`{`), "num_hidden_layers"},
		{"bad axis", sizes(1, 1), 1, json.RawMessage(`{`), "partition_axis is not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckMetadata(errMeta, tc.sizes, tc.layers, tc.axis)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, errMeta)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
