package rawjson

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCompact(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  json.RawMessage
		want json.RawMessage
	}{
		{"absent", nil, nil},
		{"null", json.RawMessage("null"), nil},
		{"spaced null", json.RawMessage(" null\n"), nil},
		{"object", json.RawMessage(`{ "batch_axis" : ["fsdp", "dp"] }`), json.RawMessage(`{"batch_axis":["fsdp","dp"]}`)},
		{"string", json.RawMessage(` "tp" `), json.RawMessage(`"tp"`)},
		{"invalid is kept", json.RawMessage(`{"a": `), json.RawMessage(`{"a": `)},
		{"empty is invalid and kept", json.RawMessage{}, json.RawMessage{}},
	} {
		got := Compact(tc.raw)
		assert.Equal(t, tc.want, got, tc.name)
	}

	in := json.RawMessage(`{"a": 1`)
	out := Compact(in)
	out[0] = 'X'
	assert.Equal(t, json.RawMessage(`{"a": 1`), in, "the result never aliases the input")
}

func TestCheck(t *testing.T) {
	errMeta := errors.New("test: invalid metadata")
	for _, tc := range []struct {
		raw json.RawMessage
		msg string
	}{
		{nil, ""},
		{json.RawMessage("null"), ""},
		{json.RawMessage(`{"a":[1,2]}`), ""},
		{json.RawMessage(`{"a":`), `test: invalid metadata: partition_axis is not valid JSON: "{\"a\":"`},
		{json.RawMessage{}, `test: invalid metadata: partition_axis is not valid JSON: ""`},
	} {
		err := Check(errMeta, "partition_axis", tc.raw)
		if tc.msg == "" {
			assert.NoError(t, err, "%q", tc.raw)
			continue
		}
		require.ErrorIs(t, err, errMeta)
		assert.EqualError(t, err, tc.msg)
	}
}
