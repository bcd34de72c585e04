package convssm

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

var (
	errSharding = errors.New("test: bad sharding")
	shards      = ShardOps{Ops: ops, Sharding: errSharding}
)

// spec builds a partition spec from one mesh axis name per tensor axis (""
// for None).
func spec(axes ...string) sharding.Spec {
	s := make(sharding.Spec, len(axes))
	for i, a := range axes {
		if a != "" {
			s[i] = sharding.MeshAxes{a}
		}
	}
	return s
}

func TestShardOpsResolve(t *testing.T) {
	pa := sharding.DefaultPartitionAxis()
	state, pos := sharding.RecurrentStateAxes(), sharding.TransformerIndexAxes()
	tests := []struct {
		name           string
		sizes          map[string]int
		conv, ssm      []int
		wantConv       string
		wantSSM        string
		wantPos        string
		wantErrPattern string
	}{
		{
			// [BATCH, HEAD, LENGTH] -> (('fsdp', 'dp'), 'tp', 'sp'); sp 2
			// does not divide K = 3 but divides N = 4.
			name: "each shape corrected on its own", sizes: map[string]int{"fsdp": 1, "dp": 2, "tp": 2, "sp": 2},
			conv: []int{4, 2, 3}, ssm: []int{4, 2, 4},
			wantConv: "PartitionSpec(('fsdp', 'dp'), 'tp', None)",
			wantSSM:  "PartitionSpec(('fsdp', 'dp'), 'tp', 'sp')",
			wantPos:  "PartitionSpec(('fsdp', 'dp'))",
		},
		{
			// tp 4 does not divide 2 channels; fsdp is not in the mesh.
			name: "indivisible and absent axes replicated", sizes: map[string]int{"dp": 2, "tp": 4},
			conv: []int{4, 2, 3}, ssm: []int{4, 2, 4},
			wantConv: "PartitionSpec(None, None, None)",
			wantSSM:  "PartitionSpec(None, None, None)",
			wantPos:  "PartitionSpec(None)",
		},
		{
			name: "positions follow the conv batch", sizes: map[string]int{"fsdp": 2, "dp": 1},
			conv: []int{2, 2, 3}, ssm: []int{2, 2, 4},
			wantConv: "PartitionSpec(('fsdp', 'dp'), None, None)",
			wantSSM:  "PartitionSpec(('fsdp', 'dp'), None, None)",
			wantPos:  "PartitionSpec(('fsdp', 'dp'))",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := shards.Resolve(pa, sharding.ModeDecode, testkit.Mesh(t, tc.sizes), state, pos, tc.conv, tc.ssm)
			require.NoError(t, err)
			assert.Equal(t, tc.wantConv, s.Conv.String())
			assert.Equal(t, tc.wantSSM, s.SSM.String())
			assert.Equal(t, tc.wantPos, s.Positions.String())
		})
	}

	m := testkit.Mesh(t, map[string]int{"dp": 2})
	_, err := shards.Resolve(pa, sharding.Mode("bogus"), m, state, pos, []int{2, 2, 3}, []int{2, 2, 4})
	require.ErrorIs(t, err, errSharding)
	require.ErrorIs(t, err, sharding.ErrMode)
	assert.Regexp(t, "^test: bad sharding: conv_states: ", err.Error())
	_, err = shards.Resolve(pa, sharding.ModeDecode, m, state, []string{"no such axis"}, []int{2, 2, 3}, []int{2, 2, 4})
	require.ErrorIs(t, err, errSharding)
	assert.Regexp(t, "^test: bad sharding: positions: ", err.Error())
}

func TestShardOpsCheck(t *testing.T) {
	m := testkit.Mesh(t, map[string]int{"dp": 2, "tp": 2})
	conv, ssm := []int{4, 2, 4}, []int{4, 2, 4}
	fit := Specs{Conv: spec("dp", "tp", ""), SSM: spec("dp", "tp", ""), Positions: spec("dp")}
	tests := []struct {
		name    string
		specs   Specs
		fitErr  string // CheckFit's message, "" for none
		batchOK bool
	}{
		{"fits", fit, "", true},
		{"replicated", Specs{Conv: spec("", "", ""), SSM: spec("", "", ""), Positions: spec("")}, "", true},
		{"ssm spec of the wrong rank", Specs{Conv: fit.Conv, SSM: spec("dp", "tp"), Positions: fit.Positions},
			`^test: bad sharding: ssm_states spec PartitionSpec\('dp', 'tp'\) for shape \[4 2 4\]: sharding: bad partition spec`, true},
		{"positions axis not in the mesh", Specs{Conv: fit.Conv, SSM: fit.SSM, Positions: spec("sp")},
			`^test: bad sharding: positions spec PartitionSpec\('sp'\) for shape \[4\]: sharding: bad partition spec`, false},
		{"kernel axis cut", Specs{Conv: spec("dp", "", "tp"), SSM: spec("dp", "", ""), Positions: spec("dp")},
			`^test: bad sharding: conv_states spec PartitionSpec\('dp', None, 'tp'\) cuts the kernel axis \(conv_kernel_size 4\) into 2 blocks over 'tp'; a shard view rolls whole windows$`, true},
		{"ssm batch differs", Specs{Conv: fit.Conv, SSM: spec("", "tp", ""), Positions: fit.Positions}, "", false},
		{"positions batch differs", Specs{Conv: fit.Conv, SSM: fit.SSM, Positions: spec("")}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := shards.CheckFit(tc.specs, conv, ssm, m)
			if tc.fitErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, errSharding)
				assert.Regexp(t, tc.fitErr, err.Error())
			}
			err = shards.CheckBatch(tc.specs)
			if tc.batchOK {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, errSharding)
			assert.Contains(t, err.Error(), "positions specs cut the batch over ")
			assert.Contains(t, err.Error(), "; a shard view's states and positions hold the same rows")
		})
	}
}

func TestShardOpsSplitJoin(t *testing.T) {
	// Devices in dp-major order: device 2·d + c holds batch rows
	// [2d, 2d+2) and channel c. conv[b, c, k] = 1 + 6b + 3c + k,
	// ssm[b, c] = 101 + 2b + c, positions 10 + b.
	m := testkit.Mesh(t, map[string]int{"dp": 2, "tp": 2})
	s := Specs{Conv: spec("dp", "tp", ""), SSM: spec("dp", "tp"), Positions: spec("dp")}
	for _, d := range []tensor.DType{tensor.BFloat16, tensor.Float32} {
		st := filled(t, d, 4)
		parts, err := shards.Split(st, s, m, []int{2, 1, 3}, []int{2, 1})
		require.NoError(t, err)
		require.Len(t, parts, 4)
		wantConv := [][]float64{{1, 2, 3, 7, 8, 9}, {4, 5, 6, 10, 11, 12}, {13, 14, 15, 19, 20, 21}, {16, 17, 18, 22, 23, 24}}
		wantSSM := [][]float64{{101, 103}, {102, 104}, {105, 107}, {106, 108}}
		wantPos := [][]int32{{10, 11}, {10, 11}, {12, 13}, {12, 13}}
		for i, p := range parts {
			assert.Equal(t, d, p.DType())
			assert.True(t, p.Conv.HasShape(2, 1, 3) && p.SSM.HasShape(2, 1), "part %d", i)
			assert.Equal(t, wantConv[i], p.Conv.Float64s(), "part %d", i)
			assert.Equal(t, wantSSM[i], p.SSM.Float64s(), "part %d", i)
			assert.Equal(t, wantPos[i], p.Positions, "part %d", i)
		}

		var agreed []int
		back, err := shards.Join(parts, s, m, []int{4, 2, 3}, []int{4, 2}, func(i int) error {
			agreed = append(agreed, i)
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, []int{0, 1, 2, 3}, agreed, "agree is called part by part, in order")
		assert.True(t, back.Conv.Equal(st.Conv))
		assert.True(t, back.SSM.Equal(st.SSM))
		assert.Equal(t, st.Positions, back.Positions)
		assert.Equal(t, d, back.DType())
	}

	// A replicated spec hands every device the whole state, sharing it.
	st := filled(t, tensor.Float32, 2)
	all := Specs{Conv: spec("", "", ""), SSM: spec("", ""), Positions: spec("")}
	parts, err := shards.Split(st, all, m, []int{2, 2, 3}, []int{2, 2})
	require.NoError(t, err)
	require.Len(t, parts, 4)
	for _, p := range parts {
		assert.True(t, p.Conv.SharesChunk(0, st.Conv, 0))
		assert.Equal(t, st.Positions, p.Positions)
	}
	parts[0].Positions[0] = 99
	assert.Equal(t, int32(10), st.Positions[0], "positions are copied")

	// Shard shapes that do not fit the slices.
	_, err = shards.Split(st, all, m, []int{1, 2, 3}, []int{2, 2})
	require.ErrorIs(t, err, errSharding)
	require.ErrorIs(t, err, errShape)
	assert.Regexp(t, `^test: bad sharding: shard 0: test: bad shape: conv_states float32\[2 2 3\], ssm_states float32\[2 2\] and 2 positions, want shapes \[1 2 3\] and \[2 2\] of one dtype and 1 positions$`, err.Error())
	// A spec that does not fit the state.
	_, err = shards.Split(st, Specs{Conv: spec("", "", "tp"), SSM: all.SSM, Positions: all.Positions}, m, []int{2, 2, 3}, []int{2, 2})
	require.ErrorIs(t, err, errSharding)
	assert.Regexp(t, "^test: bad sharding: conv_states: ", err.Error())
}

func TestShardOpsJoinErrors(t *testing.T) {
	m := testkit.Mesh(t, map[string]int{"dp": 2, "tp": 2})
	s := Specs{Conv: spec("dp", "", ""), SSM: spec("dp", ""), Positions: spec("dp")} // replicated over tp
	conv, ssm := []int{4, 2, 3}, []int{4, 2}
	st := filled(t, tensor.Float32, 4)
	good, err := shards.Split(st, s, m, []int{2, 2, 3}, []int{2, 2})
	require.NoError(t, err)
	errAgree := errors.New("test: views disagree")
	with := func(i int, p State) []State {
		out := append([]State(nil), good...)
		out[i] = p
		return out
	}
	tests := []struct {
		name    string
		parts   []State
		agree   func(i int) error
		wantErr []error
		pattern string
	}{
		{"too few parts", good[:3], nil, []error{errSharding},
			`^test: bad sharding: 3 shard views for a mesh of 4 devices$`},
		{"empty part", with(2, State{}), nil, []error{errSharding},
			`^test: bad sharding: shard view 2 is empty$`},
		{"dtype differs", with(1, filled(t, tensor.BFloat16, 2)), nil, []error{errSharding},
			`^test: bad sharding: shard view 1 is bfloat16, shard view 0 is float32$`},
		{"agree's error as it is, before a later part's", with(3, State{}),
			func(i int) error {
				if i == 1 {
					return errAgree
				}
				return nil
			}, []error{errAgree}, `^test: views disagree$`},
		{"replicas differ", with(1, good[2]), nil, []error{errSharding, sharding.ErrReplicaMismatch},
			`^test: bad sharding: conv_states: `},
		{"part of the wrong shape", with(0, filled(t, tensor.Float32, 1)), nil, []error{errSharding},
			`^test: bad sharding: conv_states: `},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agree := tc.agree
			if agree == nil {
				agree = func(int) error { return nil }
			}
			_, err := shards.Join(tc.parts, s, m, conv, ssm, agree)
			require.Error(t, err)
			for _, want := range tc.wantErr {
				require.ErrorIs(t, err, want)
			}
			assert.Regexp(t, tc.pattern, err.Error())
		})
	}
}
