package cluster

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/messages"
)

// FuzzWireSpec decodes arbitrary CacheSpec messages: the decoder never
// panics, refuses with an error wrapping actors.ErrInvalid, and what it
// accepts and can send again decodes to the same spec. The seeds include
// non-default partition axes, modes and metadata partition axes.
func FuzzWireSpec(f *testing.F) {
	var specs []actors.Spec
	for _, tc := range wireCases(f) {
		specs = append(specs, tc.spec)
	}
	for _, tc := range wireSpecCases(f) {
		specs = append(specs, tc.spec)
	}
	for _, spec := range specs {
		p, err := specToProto(spec)
		require.NoError(f, err)
		data, err := proto.Marshal(p)
		require.NoError(f, err)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p messages.CacheSpec
		if proto.Unmarshal(data, &p) != nil {
			return
		}
		spec, err := specFromProto(&p)
		if err != nil {
			require.ErrorIs(t, err, actors.ErrInvalid)
			return
		}
		again, err := specToProto(spec)
		if err != nil {
			require.ErrorIs(t, err, actors.ErrInvalid)
			return
		}
		back, err := specFromProto(again)
		require.NoError(t, err)
		require.Equal(t, spec, back)
	})
}

// FuzzWireWrite decodes arbitrary LayerWrite messages against each test
// spec and applies what decodes to a view of that spec with the runtime's
// own code: nothing panics, every refusal wraps actors.ErrInvalid (the
// decoder) or is an error (the cache), and an accepted write encodes to a
// message that decodes to the same encoding again. The seeds are the
// round-trip cases' writes (stored-rows paged writes of int8, NF4 and
// unquantized rows among them), an insert, and stored rows that name
// another storage and carry a decode part.
func FuzzWireWrite(f *testing.F) {
	cases := wireCases(f)
	for i, tc := range cases {
		for _, w := range tc.writes {
			p, err := writeToProto(1, w)
			require.NoError(f, err)
			data, err := proto.Marshal(p)
			require.NoError(f, err)
			f.Add(uint8(i), data)
		}
	}
	for i, tc := range cases { // an insert of a 1-row prefill into the contiguous cache
		if tc.spec.Transformer == nil {
			continue
		}
		m := tc.spec.Transformer.Metadata
		m.BatchSize, m.NumHiddenLayers = 1, 1
		pre, err := transformer.Init(m, tc.spec.Transformer.DType, nil)
		require.NoError(f, err)
		v, err := pre.View(0)
		require.NoError(f, err)
		p, err := writeToProto(1, &actors.InsertWrite{Slot: 1, Other: v})
		require.NoError(f, err)
		data, err := proto.Marshal(p)
		require.NoError(f, err)
		f.Add(uint8(i), data)
	}
	for i, tc := range cases { // stored rows on the wrong storage, and with a decode part
		for _, w := range tc.writes {
			sw, ok := w.(*actors.PagedStoredWrite)
			if !ok {
				continue
			}
			other := *sw
			other.Rows.Storage.Quantization = (sw.Rows.Storage.Quantization + 1) % 3
			other.Step.DecodesPosition, other.Step.DecodesPageTable = []int32{1, -1}, [][]int32{{0}, {1}}
			p, err := writeToProto(0, &other)
			require.NoError(f, err)
			data, err := proto.Marshal(p)
			require.NoError(f, err)
			f.Add(uint8(i), data)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		tc := cases[int(which)%len(cases)]
		var p messages.LayerWrite
		if proto.Unmarshal(data, &p) != nil {
			return
		}
		w, err := writeFromProto(&p, tc.spec)
		if err != nil {
			require.ErrorIs(t, err, actors.ErrInvalid)
			return
		}
		sent, err := writeToProto(int(p.Layer), w)
		require.NoError(t, err)
		back, err := writeFromProto(sent, tc.spec)
		require.NoError(t, err)
		again, err := writeToProto(int(p.Layer), back)
		require.NoError(t, err)
		require.True(t, proto.Equal(sent, again), "a decoded write does not survive a second trip")

		views, err := tc.spec.LayerViews()
		require.NoError(t, err)
		_, _, err = actors.Apply(views[len(views)-1], w)
		if err != nil {
			require.NotEmpty(t, err.Error())
			require.False(t, errors.Is(err, actors.ErrInternal), "bad input is not an internal error: %v", err)
		}
	})
}
