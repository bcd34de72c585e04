package paged

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStepMetadataModes(t *testing.T) {
	prefill := StepMetadata{PrefillLength: 5, PrefillPosition: []int32{0, 1, 2, 3, 4, 5, 6, 7}, PrefillPageTable: []int32{1, 2, 0}}
	decodes := StepMetadata{DecodesPosition: []int32{3, -1}, DecodesPageTable: [][]int32{{4, 0, 0}, {0, 0, 0}}}
	mixed := prefill
	mixed.DecodesPosition, mixed.DecodesPageTable = decodes.DecodesPosition, decodes.DecodesPageTable
	tests := []struct {
		name                   string
		m                      StepMetadata
		prefill, decode, mixed bool
	}{
		{"empty: both modes, prefill wins", InitEmptyStep(), true, true, false},
		{"prefill", prefill, true, false, false},
		{"prefill without positions", StepMetadata{PrefillLength: 3, PrefillPageTable: []int32{1}}, true, false, false},
		{"decode", decodes, false, true, false},
		{"mixed", mixed, false, false, true},
		{"zero decode slots are present", StepMetadata{DecodesPosition: []int32{}, DecodesPageTable: [][]int32{}}, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, tt.m.Validate())
			assert.Equal(t, tt.prefill, tt.m.IsPrefillMode(), "IsPrefillMode")
			assert.Equal(t, tt.decode, tt.m.IsDecodeMode(), "IsDecodeMode")
			assert.Equal(t, tt.mixed, tt.m.IsMixed(), "IsMixed")
		})
	}
}

func TestStepMetadataValidate(t *testing.T) {
	tests := []struct {
		name string
		m    StepMetadata
		want string
	}{
		{"positions without table", StepMetadata{PrefillPosition: []int32{0}}, "prefill_position has 1 entries but prefill_page_table is absent"},
		{"negative length", StepMetadata{PrefillLength: -2, PrefillPageTable: []int32{1}}, "prefill_length -2 is negative"},
		{"positions without table rows", StepMetadata{DecodesPosition: []int32{1}}, "decodes_position present=true but decodes_page_table present=false"},
		{"table without positions", StepMetadata{DecodesPageTable: [][]int32{{1}}}, "decodes_position present=false but decodes_page_table present=true"},
		{"row count", StepMetadata{DecodesPosition: []int32{1, 2}, DecodesPageTable: [][]int32{{1}}}, "1 rows for 2 decode slots"},
		{"empty row", StepMetadata{DecodesPosition: []int32{1}, DecodesPageTable: [][]int32{{}}}, "row 0 has 0 entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			require.ErrorIs(t, err, ErrStep)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestStepMetadataJSON(t *testing.T) {
	tests := []struct {
		name string
		m    StepMetadata
		json string
	}{
		{"empty", InitEmptyStep(), `{"prefill_length":0,"prefill_position":null,"prefill_page_table":null,"decodes_position":null,"decodes_page_table":null}`},
		{"mixed", StepMetadata{
			PrefillLength: 3, PrefillPosition: []int32{4, 5, 6, 7}, PrefillPageTable: []int32{1, 2},
			DecodesPosition: []int32{9, -1}, DecodesPageTable: [][]int32{{3, 4}, {0, 0}},
		}, `{"prefill_length":3,"prefill_position":[4,5,6,7],"prefill_page_table":[1,2],"decodes_position":[9,-1],"decodes_page_table":[[3,4],[0,0]]}`},
		{"present but empty", StepMetadata{DecodesPosition: []int32{}, DecodesPageTable: [][]int32{}},
			`{"prefill_length":0,"prefill_position":null,"prefill_page_table":null,"decodes_position":[],"decodes_page_table":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.m)
			require.NoError(t, err)
			assert.JSONEq(t, tt.json, string(b))
			var back StepMetadata
			require.NoError(t, json.Unmarshal(b, &back))
			assert.Equal(t, tt.m, back)
			assert.Equal(t, tt.m.HasPrefill(), back.HasPrefill())
			assert.Equal(t, tt.m.HasDecodes(), back.HasDecodes())
		})
	}
}

func TestStepMetadataJSONScalarSentinel(t *testing.T) {
	// EasyDeL's init_empty: every field the rank-0 scalar 1_000_000.
	var m StepMetadata
	require.NoError(t, json.Unmarshal([]byte(`{"prefill_length":1000000,"prefill_position":1000000,
		"prefill_page_table":1000000,"decodes_position":[2],"decodes_page_table":[[5]]}`), &m))
	assert.False(t, m.HasPrefill())
	assert.True(t, m.IsDecodeMode())
	assert.Equal(t, []int32{2}, m.DecodesPosition)

	for _, bad := range []string{`{"decodes_position":"x"}`, `{"prefill_page_table":{}}`, `{"prefill_position":[1.5]}`, `[1]`} {
		require.ErrorIs(t, json.Unmarshal([]byte(bad), &m), ErrStep, bad)
	}
}
