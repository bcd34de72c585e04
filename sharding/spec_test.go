package sharding

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCorrect(t *testing.T) {
	full := mustMesh(t, map[string]int{DP: 2, FSDP: 1, TP: 4, SP: 1, EP: 1})
	noTP := mustMesh(t, map[string]int{DP: 2})
	tests := []struct {
		name  string
		spec  Spec
		shape []int
		mesh  Mesh
		want  Spec
	}{
		{"kv prefill fits", Spec{{FSDP, DP}, {SP}, nil, nil}, []int{8, 2048, 8, 128}, full, Spec{{FSDP, DP}, {SP}, nil, nil}},
		{"pad to rank", Spec{{FSDP, DP}}, []int{4, 3, 2}, full, Spec{{FSDP, DP}, nil, nil}},
		{"truncate to rank", Spec{{TP}, nil, nil, nil}, []int{8}, full, Spec{{TP}}},
		{"batch not divisible by fsdp*dp", Spec{{FSDP, DP}, {SP}}, []int{3, 16}, full, Spec{nil, {SP}}},
		{"kv heads fewer than tp", Spec{{TP}, nil, nil, nil}, []int{2, 9, 16, 64}, full, Spec{nil, nil, nil, nil}},
		{"kv heads not divisible by tp", Spec{{TP}, nil, nil, nil}, []int{6, 9, 16, 64}, full, Spec{nil, nil, nil, nil}},
		{"product of two axes", Spec{{DP, TP}}, []int{4}, full, Spec{nil}},
		{"product of two axes divides", Spec{{DP, TP}}, []int{16}, full, Spec{{DP, TP}}},
		{"axis not in mesh", Spec{{FSDP, DP}, {TP}}, []int{4, 8}, noTP, Spec{nil, nil}},
		{"size-1 axes are kept", Spec{{SP}, {EP}}, []int{3, 5}, full, Spec{{SP}, {EP}}},
		{"zero dimension is divisible", Spec{{TP}}, []int{0}, full, Spec{{TP}}},
		{"rank 0", Spec{{TP}}, []int{}, full, Spec{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.spec.Clone()
			got := Correct(tt.spec, tt.shape, tt.mesh)
			assert.True(t, tt.want.Equal(got), "got %s, want %s", got, tt.want)
			assert.True(t, in.Equal(tt.spec), "Correct must not modify its input")
		})
	}
}

func TestResolveForPaged(t *testing.T) {
	// Paged pages over tp=4: 8 kv heads are sharded, 2 are replicated (as
	// EasyDeL's head-shard fallback).
	m := mustMesh(t, map[string]int{DP: 2, TP: 4})
	pa := DefaultPartitionAxis()
	s, err := ResolveFor(pa, PagedPageAxes(), ModePrefill, []int{8, 100, 16, 128}, m)
	require.NoError(t, err)
	assert.Equal(t, "PartitionSpec('tp', None, None, None)", s.String())
	s, err = ResolveFor(pa, PagedPageAxes(), ModePrefill, []int{2, 100, 16, 128}, m)
	require.NoError(t, err)
	assert.True(t, s.IsReplicated())
	_, err = ResolveFor(pa, []string{"nope"}, ModePrefill, []int{2}, m)
	assert.ErrorIs(t, err, ErrUnknownAxis)
}

func TestShardSlicesRejectsUncorrectedSpecs(t *testing.T) {
	m := mustMesh(t, map[string]int{DP: 2, TP: 4})
	tests := []struct {
		name  string
		shape []int
		spec  Spec
		err   error
		want  string
	}{
		{"rank", []int{4, 4}, Spec{{TP}}, ErrSpec, "1 entries for the rank-2 shape"},
		{"not in mesh", []int{4, 4}, Spec{{SP}, nil}, ErrSpec, `names mesh axis "sp", which is not in Mesh(dp=2, tp=4)`},
		{"twice", []int{4, 4}, Spec{{TP}, {TP}}, ErrSpec, `uses mesh axis "tp" for tensor axes 0 and 1`},
		{"twice in one entry", []int{16}, Spec{{TP, TP}}, ErrSpec, `uses mesh axis "tp" for tensor axes 0 and 0`},
		{"not divisible", []int{6, 4}, Spec{{TP}, nil}, ErrSpec, "splits dimension 0 of size 6 into 4 shards"},
		{"negative", []int{-4, 4}, Spec{nil, nil}, ErrShape, "dimension 0 of shape [-4 4] is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ShardSlices(tt.shape, tt.spec, m)
			require.ErrorIs(t, err, tt.err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := ShardSlices([]int{1}, Spec{nil}, Mesh{})
	assert.ErrorIs(t, err, ErrMesh)
}
