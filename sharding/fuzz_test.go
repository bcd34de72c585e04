package sharding

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzPartitionAxisJSON: decoding never panics, a decoded value passes
// Validate, and it survives a marshal/unmarshal round trip unchanged.
func FuzzPartitionAxisJSON(f *testing.F) {
	def, err := json.Marshal(DefaultPartitionAxis())
	require.NoError(f, err)
	for _, s := range []string{string(def), `{}`, `{"batch_axis":"dp"}`, `{"head_axis":["tp","sp"],"decode_head_axis":null}`,
		`{"data_parallel_axis":"data"}`, `{"batch_axis":[]}`, `{"head_axis":[""]}`, `null`, `[]`, `{"x":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var pa PartitionAxis
		if err := json.Unmarshal(data, &pa); err != nil {
			return
		}
		require.NoError(t, pa.Validate())
		b, err := json.Marshal(pa)
		require.NoError(t, err)
		var back PartitionAxis
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, pa, back)
	})
}

// FuzzSpecJSON: decoding never panics, and a decoded spec survives a
// marshal/unmarshal round trip.
func FuzzSpecJSON(f *testing.F) {
	for _, s := range []string{`[["fsdp","dp"],"sp",null,null]`, `[]`, `null`, `["tp"]`, `[[]]`, `[1]`, `[["a",2]]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Spec
		if err := json.Unmarshal(data, &s); err != nil {
			return
		}
		b, err := json.Marshal(s)
		require.NoError(t, err)
		var back Spec
		require.NoError(t, json.Unmarshal(b, &back))
		assert.True(t, s.Equal(back), "%s -> %s -> %s", data, b, back)
	})
}
