package sharding_test

import (
	"errors"
	"math/rand"
	"reflect"
	"testing"
	"testing/quick"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
	"github.com/stretchr/testify/require"
)

// budgetCase is a random paged budget: a dp x tp mesh of equal devices and
// a PagedBudgetConfig.
type budgetCase struct {
	dp, tp int
	mem    int64
	cfg    sharding.PagedBudgetConfig
}

func (budgetCase) Generate(r *rand.Rand, _ int) reflect.Value {
	dts := []tensor.DType{tensor.Float32, tensor.BFloat16, tensor.Float16, tensor.Float64}
	mem := int64(1+r.Intn(64)) << (20 + r.Intn(10)) // 1 MiB .. 32 GiB
	c := budgetCase{
		dp:  1 + r.Intn(2),
		tp:  []int{1, 2, 3, 4, 8}[r.Intn(5)],
		mem: mem,
		cfg: sharding.PagedBudgetConfig{
			NumHiddenLayers: 1 + r.Intn(64),
			PageSize:        []int{8, 16, 64, 128, 256}[r.Intn(5)],
			NumKVHeads:      1 + r.Intn(16),
			KVHeadDimSize:   []int{32, 64, 80, 128, 256}[r.Intn(5)],
			DType:           dts[r.Intn(len(dts))],
			HBMUtilization:  0.05 + 0.9*r.Float64(),
			BytesInUse:      r.Int63n(mem),
		},
	}
	return reflect.ValueOf(c)
}

// TestPagedPagesAgreesWithPagedMetadata: the sharding budget and
// layers/paged.NewMetadata (given EasyDeL's head_sharding = tp size)
// compute the same page count and fail on the same budgets.
func TestPagedPagesAgreesWithPagedMetadata(t *testing.T) {
	pa := sharding.DefaultPartitionAxis()
	f := func(c budgetCase) bool {
		m, err := sharding.NewMesh(sharding.MeshConfig{
			Sizes:   map[string]int{sharding.DP: c.dp, sharding.FSDP: 1, sharding.TP: c.tp, sharding.SP: 1, sharding.EP: 1},
			Devices: sharding.UniformDevices(c.dp*c.tp, c.mem),
		})
		require.NoError(t, err)
		got, gotErr := sharding.PagedPages(c.cfg, pa, m)
		meta, wantErr := paged.NewMetadata(paged.MetadataConfig{
			BatchSize: 1, NumHiddenLayers: c.cfg.NumHiddenLayers, MaxSequences: 1024, PageSize: c.cfg.PageSize,
			NumKVHeads: c.cfg.NumKVHeads, KVHeadDimSize: c.cfg.KVHeadDimSize, HBMUtilization: c.cfg.HBMUtilization,
			DType: c.cfg.DType, HeadShards: c.tp,
			Memory: paged.StaticMemory{BytesReservableLimit: c.mem, BytesInUse: c.cfg.BytesInUse},
		})
		switch {
		case gotErr == nil && wantErr == nil:
			if got.PagesPerLayer != meta.NumPagesPerLayer {
				t.Logf("%+v: sharding %d pages, paged %d", c, got.PagesPerLayer, meta.NumPagesPerLayer)
				return false
			}
			return true
		case errors.Is(gotErr, sharding.ErrBudget) && errors.Is(wantErr, paged.ErrBudget):
			return true
		default:
			t.Logf("%+v: sharding error %v, paged error %v", c, gotErr, wantErr)
			return false
		}
	}
	require.NoError(t, quick.Check(f, &quick.Config{MaxCount: 2000}))
}
