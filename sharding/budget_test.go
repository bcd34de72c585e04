package sharding

import (
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fullMesh is EasyDeL's usual mesh: all five axes, here dp=2, tp=4 and
// the rest 1, devices of mem bytes.
func fullMesh(t testing.TB, dp, tp, sp int, mem int64) Mesh {
	t.Helper()
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: dp, FSDP: 1, TP: tp, SP: sp, EP: 1}, Devices: UniformDevices(dp*tp*sp, mem)})
	require.NoError(t, err)
	return m
}

func TestShardBytes(t *testing.T) {
	m := fullMesh(t, 2, 4, 1, 1<<30)
	// (8, 2048, 8, 128) bf16, batch over dp and heads over tp: each device
	// holds (4, 2048, 2, 128) x 2 bytes.
	n, err := ShardBytes([]int{8, 2048, 8, 128}, tensor.BFloat16, Spec{{DP}, nil, {TP}, nil}, m)
	require.NoError(t, err)
	assert.Equal(t, int64(4*2048*2*128*2), n)
	n, err = ShardBytes([]int{8, 2048, 8, 128}, tensor.Float32, Spec{nil, nil, nil, nil}, m)
	require.NoError(t, err)
	assert.Equal(t, int64(8*2048*8*128*4), n, "replicated: the whole tensor on each device")

	_, err = ShardBytes([]int{6}, tensor.Float32, Spec{{TP}}, m)
	assert.ErrorIs(t, err, ErrSpec)
	_, err = ShardBytes([]int{6}, tensor.DType(0), Spec{nil}, m)
	assert.ErrorIs(t, err, ErrShape)
	_, err = ShardBytes([]int{1 << 40, 1 << 40}, tensor.Float64, Spec{nil, nil}, m)
	assert.ErrorIs(t, err, ErrShape, "overflow")
}

// TestBytesPerDeviceByHand checks each cache kind against sizes worked out
// by hand on a dp=2, tp=4 mesh (fsdp, sp, ep of size 1) with the default
// PartitionAxis: batch over fsdp·dp = 2, heads over tp = 4 where
// divisible.
func TestBytesPerDeviceByHand(t *testing.T) {
	pa := DefaultPartitionAxis()
	m := fullMesh(t, 2, 4, 1, 1<<30)
	tests := []struct {
		name string
		c    CacheShape
		want int64
	}{
		// key (4,16,8,4) -> (2,16,8,4) bf16 = 2048; value (4,16,2,8) ->
		// (2,16,2,8) = 1024 (kv heads are not sharded: kv_head_axis is
		// None); index and starts (4,) int32 -> 2 x 4 = 8 each; 2 layers.
		{"transformer", TransformerShape{NumHiddenLayers: 2, BatchSize: 4, SequenceLength: 16, KeyHeads: 8, KeyDim: 4,
			ValueHeads: 2, ValueDim: 8, DType: tensor.BFloat16}, 2 * (2048 + 1024 + 8 + 8)},
		// (8,10,16,4) f32 pages -> (2,10,16,4) = 5120 bytes, K and V, 2 layers.
		{"paged", PagedShape{NumHiddenLayers: 2, NumPagesPerLayer: 10, PageSize: 16, NumKVHeads: 8, KVHeadDimSize: 4,
			DType: tensor.Float32}, 2 * 2 * 5120},
		// 6 kv heads do not divide over tp=4: replicated, 6x10x16x4x4 = 15360.
		{"paged replicated", PagedShape{NumHiddenLayers: 1, NumPagesPerLayer: 10, PageSize: 16, NumKVHeads: 6, KVHeadDimSize: 4,
			DType: tensor.Float32}, 2 * 15360},
		// conv (4,8,4) -> (2,2,4) f32 = 64; ssm (4,8,16) -> (2,2,16) = 256;
		// positions (4,) int32 -> 8; 3 layers.
		{"mamba", MambaShape{NumHiddenLayers: 3, BatchSize: 4, IntermediateSize: 8, SSMStateSize: 16, ConvKernelSize: 4,
			DType: tensor.Float32}, 3 * (64 + 256 + 8)},
		// conv (2, 8+2x1x4 = 16, 4) -> (1,4,4) f16 = 32; ssm (2,4,3,4) ->
		// (1,1,3,4) = 24; positions -> 4.
		{"mamba2", Mamba2Shape{NumHiddenLayers: 1, BatchSize: 2, IntermediateSize: 8, NumHeads: 4, HeadDim: 3, StateSize: 4,
			ConvKernelSize: 4, NGroups: 1, DType: tensor.Float16}, 32 + 24 + 4},
		// key_value (4,8,4,4) -> (2,2,4,4) f32 = 256; 2 layers.
		{"lightning", LightningShape{NumHiddenLayers: 2, BatchSize: 4, NumHeads: 8, KeyDim: 4, ValueDim: 4,
			DType: tensor.Float32}, 2 * 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BytesPerDevice(tt.c, pa, m)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestBytesPerDeviceSingleDeviceIsWholeCache(t *testing.T) {
	m := mustMesh(t, map[string]int{})
	c := TransformerShape{NumHiddenLayers: 3, BatchSize: 5, SequenceLength: 7, KeyHeads: 2, KeyDim: 3, ValueHeads: 2, ValueDim: 3,
		DType: tensor.Float64}
	got, err := BytesPerDevice(c, DefaultPartitionAxis(), m)
	require.NoError(t, err)
	assert.Equal(t, int64(3*(2*5*7*2*3*8+2*5*4)), got)
}

func TestCacheShapeValidation(t *testing.T) {
	pa := DefaultPartitionAxis()
	m := fullMesh(t, 1, 1, 1, 1)
	tests := []struct {
		name string
		c    CacheShape
		want string
	}{
		{"transformer", TransformerShape{NumHiddenLayers: 1, BatchSize: 1, SequenceLength: 0, KeyHeads: 1, KeyDim: 1, ValueHeads: 1,
			ValueDim: 1, DType: tensor.Float32}, "transformer cache: sequence_length is 0, want > 0"},
		{"paged", PagedShape{NumHiddenLayers: 1, NumPagesPerLayer: 2, PageSize: 1, NumKVHeads: -1, KVHeadDimSize: 1,
			DType: tensor.Float32}, "paged cache: num_kv_heads is -1"},
		{"mamba dtype", MambaShape{NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: 1, SSMStateSize: 1, ConvKernelSize: 1},
			"mamba cache: dtype 0 is not a supported dtype"},
		{"mamba2", Mamba2Shape{NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: 1, NumHeads: 1, HeadDim: 1, StateSize: 1,
			ConvKernelSize: 1, DType: tensor.Float32}, "mamba2 cache: n_groups is 0"},
		{"lightning", LightningShape{BatchSize: 1, NumHeads: 1, KeyDim: 1, ValueDim: 1, DType: tensor.Float32},
			"lightning cache: num_hidden_layers is 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BytesPerDevice(tt.c, pa, m)
			require.ErrorIs(t, err, ErrShape)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := LayoutBytes(Layout{Name: "k", Shape: []int{2}, ItemSize: 0, Axes: []string{Batch}, Count: 1}, pa, m)
	assert.ErrorIs(t, err, ErrShape)
	_, err = LayoutBytes(Layout{Name: "k", Shape: []int{2}, ItemSize: 4, Axes: []string{"bogus"}, Count: 1}, pa, m)
	require.ErrorIs(t, err, ErrUnknownAxis)
	assert.Contains(t, err.Error(), "k: ")
}

func TestCheckBudget(t *testing.T) {
	pa := DefaultPartitionAxis()
	c := LightningShape{NumHiddenLayers: 2, BatchSize: 4, NumHeads: 8, KeyDim: 4, ValueDim: 4, DType: tensor.Float32}
	// 512 bytes per device (TestBytesPerDeviceByHand).
	devs := UniformDevices(8, 512)
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, FSDP: 1, TP: 4, SP: 1, EP: 1}, Devices: devs})
	require.NoError(t, err)
	need, err := CheckBudget(c, pa, m)
	require.NoError(t, err, "exactly enough fits")
	assert.Equal(t, int64(512), need)

	devs[5].MemoryBytes = 500
	devs[6].MemoryBytes = 400
	m, err = NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, FSDP: 1, TP: 4, SP: 1, EP: 1}, Devices: devs})
	require.NoError(t, err)
	need, err = CheckBudget(c, pa, m)
	require.ErrorIs(t, err, ErrBudget)
	assert.Equal(t, int64(512), need)
	assert.Contains(t, err.Error(), "the lightning cache needs 512 bytes per device")
	assert.Contains(t, err.Error(), "(key_value 512)")
	assert.Contains(t, err.Error(), "device 6 (id 6) has 400 bytes: short by 112 bytes")
}

func TestHeadShards(t *testing.T) {
	pa := DefaultPartitionAxis()
	m := fullMesh(t, 2, 4, 1, 1)
	tests := []struct {
		kvHeads, want int
	}{
		{8, 4}, {4, 4}, {32, 4},
		{2, 1}, // fewer heads than tp: replicated
		{6, 1}, // tp does not divide: replicated
		{1, 1},
	}
	for _, tt := range tests {
		got, err := HeadShards(tt.kvHeads, pa, m)
		require.NoError(t, err)
		assert.Equal(t, tt.want, got, "kv heads %d", tt.kvHeads)
	}
	noTP := mustMesh(t, map[string]int{DP: 4})
	got, err := HeadShards(8, pa, noTP)
	require.NoError(t, err)
	assert.Equal(t, 1, got, "no tp axis")
	two := pa.Clone()
	two.HeadAxis = MeshAxes{TP, DP}
	got, err = HeadShards(8, two, m)
	require.NoError(t, err)
	assert.Equal(t, 8, got, "head axis over tp x dp")
	_, err = HeadShards(0, pa, m)
	assert.ErrorIs(t, err, ErrShape)
}

// specExample is spec section 7.1's worked example.
func specExample() PagedBudgetConfig {
	return PagedBudgetConfig{NumHiddenLayers: 32, PageSize: 128, NumKVHeads: 8, KVHeadDimSize: 128, DType: tensor.BFloat16,
		HBMUtilization: 0.6, BytesInUse: 8589934592}
}

func TestPagedPagesSpecExample(t *testing.T) {
	// limit 16 GiB, util 0.6, 8 GiB in use, tp=4, Hkv=8, D=128, bf16, 32
	// layers, page size 128: int(limit*0.6) = 10307921510, usable
	// 1717986918, x4 shards = 6871947672, per-kv 4096, 409 pages.
	m := fullMesh(t, 2, 4, 1, 17179869184)
	b, err := PagedPages(specExample(), DefaultPartitionAxis(), m)
	require.NoError(t, err)
	assert.Equal(t, 409, b.PagesPerLayer)
	assert.Equal(t, 4, b.HeadShards)
	assert.Equal(t, int64(10307921510-8589934592), b.UsableBytesPerDevice)
	assert.Equal(t, int64(128*4096), b.PageBytes)
	assert.Equal(t, int64(409*32*128*4096/4), b.PoolBytesPerDevice)
	assert.LessOrEqual(t, b.PoolBytesPerDevice, b.UsableBytesPerDevice)

	// The pool fits: the paged cache of that size needs exactly the pool
	// bytes per device.
	need, err := BytesPerDevice(PagedShape{NumHiddenLayers: 32, NumPagesPerLayer: 409, PageSize: 128, NumKVHeads: 8,
		KVHeadDimSize: 128, DType: tensor.BFloat16}, DefaultPartitionAxis(), m)
	require.NoError(t, err)
	assert.Equal(t, b.PoolBytesPerDevice, need)
}

func TestPagedPagesReplicatesHeads(t *testing.T) {
	// 2 kv heads on tp=4: shards = 1, so the budget is one device's:
	// per-kv = 2 x 128 x 2 x 2 = 1024, page = 131072 bytes,
	// 1717986918 // 32 = 53687091, // 131072 = 409.
	cfg := specExample()
	cfg.NumKVHeads = 2
	m := fullMesh(t, 2, 4, 1, 17179869184)
	b, err := PagedPages(cfg, DefaultPartitionAxis(), m)
	require.NoError(t, err)
	assert.Equal(t, 1, b.HeadShards)
	assert.Equal(t, 409, b.PagesPerLayer)
	// 6 kv heads: shards = 1; page = 128 x 6 x 128 x 4 = 393216 bytes;
	// 53687091 // 393216 = 136.
	cfg.NumKVHeads = 6
	b, err = PagedPages(cfg, DefaultPartitionAxis(), m)
	require.NoError(t, err)
	assert.Equal(t, 1, b.HeadShards)
	assert.Equal(t, 136, b.PagesPerLayer)
}

func TestPagedPagesUsesSmallestDevice(t *testing.T) {
	devs := UniformDevices(8, 17179869184)
	devs[3].MemoryBytes = 15 << 30
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, TP: 4}, Devices: devs})
	require.NoError(t, err)
	b, err := PagedPages(specExample(), DefaultPartitionAxis(), m)
	require.NoError(t, err)
	// int(15 GiB x 0.6) - 8 GiB = 1073741824; x4 // 32 // 524288 = 256.
	assert.Equal(t, int64(1073741824), b.UsableBytesPerDevice)
	assert.Equal(t, 256, b.PagesPerLayer)
}

func TestPagedPagesErrors(t *testing.T) {
	pa := DefaultPartitionAxis()
	m := fullMesh(t, 2, 4, 1, 17179869184)

	// 200000 usable bytes x 4 shards // 32 // 524288 = 0 pages.
	cfg := specExample()
	cfg.BytesInUse = 10307921510 - 200000 // usable 200000 bytes
	_, err := PagedPages(cfg, pa, m)
	require.ErrorIs(t, err, ErrBudget)
	// 2 pages x 32 layers x 524288 bytes / 4 shards = 8388608 per device.
	assert.Contains(t, err.Error(), "need 8388608 bytes per device: short by 8188608 bytes")
	assert.Contains(t, err.Error(), "has 200000 usable bytes")

	cfg.BytesInUse = 10307921510 + 5
	_, err = PagedPages(cfg, pa, m)
	require.ErrorIs(t, err, ErrBudget)
	assert.Contains(t, err.Error(), "-5 usable bytes: short by 5 bytes")

	bad := []struct {
		name string
		mod  func(c *PagedBudgetConfig)
		want string
	}{
		{"layers", func(c *PagedBudgetConfig) { c.NumHiddenLayers = 0 }, "num_hidden_layers is 0"},
		{"util 1", func(c *PagedBudgetConfig) { c.HBMUtilization = 1 }, "hbm_utilization is 1"},
		{"util 0", func(c *PagedBudgetConfig) { c.HBMUtilization = 0 }, "hbm_utilization is 0"},
		{"in use", func(c *PagedBudgetConfig) { c.BytesInUse = -1 }, "bytes in use -1"},
		{"dtype", func(c *PagedBudgetConfig) { c.DType = 0 }, "dtype 0"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := specExample()
			tt.mod(&c)
			_, err := PagedPages(c, pa, m)
			require.ErrorIs(t, err, ErrShape)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err = PagedPages(specExample(), pa, Mesh{})
	assert.ErrorIs(t, err, ErrMesh)
}
