package layerlist

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

var errSharding = errors.New("test: bad sharding")

func TestIndex(t *testing.T) {
	two := 2
	tests := []struct {
		name   string
		index  Index
		layer  int
		ok     bool
		String string
	}{
		{"None", IndexOf(nil), 0, false, "None"},
		{"zero value is None", Index{}, 0, false, "None"},
		{"layer 2", IndexOf(&two), 2, true, "2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, ok := tc.index.Get()
			assert.Equal(t, tc.layer, l)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.String, tc.index.String())
		})
	}
	two = 3
	l, _ := IndexOf(&two).Get()
	assert.Equal(t, 3, l)
	zero := 0
	assert.NotEqual(t, IndexOf(nil), IndexOf(&zero), "layer 0 is not None")
}

func TestCheckLayer(t *testing.T) {
	l := func(i int) Index { return IndexOf(&i) }
	tests := []struct {
		got, want Index
		wantError string
	}{
		{l(2), l(2), ""},
		{Index{}, Index{}, ""},
		{l(1), l(2), "test: bad sharding: shard view 3 has layer index 1, shard view 0 has 2"},
		{Index{}, l(0), "test: bad sharding: shard view 3 has layer index None, shard view 0 has 0"},
		{l(5), Index{}, "test: bad sharding: shard view 3 has layer index 5, shard view 0 has None"},
	}
	for _, tc := range tests {
		err := CheckLayer(errSharding, 3, tc.got, tc.want)
		if tc.wantError == "" {
			assert.NoError(t, err)
			continue
		}
		require.ErrorIs(t, err, errSharding)
		assert.EqualError(t, err, tc.wantError)
	}
}

// part is a test shard view; the zero part is empty.
type part struct{ dtype tensor.DType }

func (p part) IsEmpty() bool       { return p.dtype == 0 }
func (p part) DType() tensor.DType { return p.dtype }

func TestCheckParts(t *testing.T) {
	f32 := part{tensor.Float32}
	errAgree := errors.New("test: views disagree")
	none := func(int) error { return nil }
	tests := []struct {
		name    string
		parts   []part
		agree   func(i int) error
		wantErr error
		msg     string
	}{
		{"agree", []part{f32, f32, f32, f32}, none, nil, ""},
		{"too few parts", []part{f32, f32, f32}, none, errSharding, "test: bad sharding: 3 shard views for a mesh of 4 devices"},
		{"empty part", []part{f32, f32, {}, f32}, none, errSharding, "test: bad sharding: shard view 2 is empty"},
		{"dtype differs", []part{f32, {tensor.BFloat16}, f32, f32}, none, errSharding,
			"test: bad sharding: shard view 1 is bfloat16, shard view 0 is float32"},
		{"agree's error as it is, before a later part's", []part{f32, f32, f32, {}}, func(i int) error {
			if i == 1 {
				return errAgree
			}
			return nil
		}, errAgree, "test: views disagree"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckParts(errSharding, tc.parts, 4, tc.agree)
			if tc.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.wantErr)
			assert.EqualError(t, err, tc.msg)
		})
	}
}
