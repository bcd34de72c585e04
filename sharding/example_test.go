package sharding_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// Example shards a paged cache's key pages over a dp=2, tp=4 mesh: kv
// heads go over tp, and the two dp groups hold replicas. It then sizes the
// page pool with spec section 7.1's worked example.
func Example() {
	mesh, err := sharding.NewMesh(sharding.MeshConfig{
		Sizes:   map[string]int{sharding.DP: 2, sharding.FSDP: 1, sharding.TP: 4, sharding.SP: 1, sharding.EP: 1},
		Devices: sharding.UniformDevices(8, 16<<30),
	})
	if err != nil {
		panic(err)
	}
	pa := sharding.DefaultPartitionAxis()

	kv, _ := sharding.Resolve(pa, sharding.TransformerKVAxes(), sharding.ModePrefill)
	fmt.Println("transformer K/V:", kv)

	shape := []int{8, 4, 2, 3} // (kv heads, pages, page size, head dim)
	spec, _ := sharding.ResolveFor(pa, sharding.PagedPageAxes(), sharding.ModePrefill, shape, mesh)
	fmt.Println("pages:", spec)
	slices, _ := sharding.ShardSlices(shape, spec, mesh)
	for _, s := range slices[3:6] {
		fmt.Printf("device %d at %v: heads %v, shard %d, replica %d of device %d\n",
			s.Device.ID, mesh.Coords(s.Index), s.Ranges[0], s.Shard, s.Replica, s.Primary)
	}

	values := make([]float64, 8*4*2*3)
	for i := range values {
		values[i] = float64(i)
	}
	pages := tensor.Must(tensor.FromFloat64s(tensor.BFloat16, values, shape...))
	parts, _ := sharding.Split(pages, spec, mesh)
	back, _ := sharding.Join(parts, spec, mesh, shape)
	fmt.Println("part shape:", parts[5].Shape(), "round trip equal:", back.Equal(pages))

	budget, _ := sharding.PagedPages(sharding.PagedBudgetConfig{NumHiddenLayers: 32, PageSize: 128, NumKVHeads: 8,
		KVHeadDimSize: 128, DType: tensor.BFloat16, HBMUtilization: 0.6, BytesInUse: 8 << 30}, pa, mesh)
	fmt.Printf("pages per layer: %d over %d head shards\n", budget.PagesPerLayer, budget.HeadShards)

	// Output:
	// transformer K/V: PartitionSpec(('fsdp', 'dp'), 'sp', None, None)
	// pages: PartitionSpec('tp', None, None, None)
	// device 3 at [0 0 3 0 0]: heads [6, 8), shard 3, replica 0 of device 3
	// device 4 at [1 0 0 0 0]: heads [0, 2), shard 0, replica 1 of device 0
	// device 5 at [1 0 1 0 0]: heads [2, 4), shard 1, replica 1 of device 1
	// part shape: [2 4 2 3] round trip equal: true
	// pages per layer: 409 over 4 head shards
}
