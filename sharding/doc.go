// Package sharding is kvmesh's description of how caches are laid out over
// a device mesh: the Mesh, EasyDeL's PartitionAxis defaults, partition-spec
// resolution and auto-correction, the slice of a tensor each device holds,
// splitting and joining tensors by a spec, and per-device memory budgets
// (DESIGN.md section 1; spec section 5, and 7.1 for the page budget).
//
// It is plain, synchronous Go. It imports only layers/tensor; the cache
// packages (layers/transformer, layers/paged, ...) may import it for their
// specs, never the other way round, so the budget functions take plain
// sizes (TransformerShape, PagedShape, ...) rather than cache metadata.
//
// # Mesh
//
// A Mesh has named axes among dp, fsdp, tp, sp and ep, each with a size,
// and one Device (an id and a memory size) per point of the grid. Devices
// are listed in row-major order over the axis order: dp, fsdp, tp, sp, ep
// by default (the axes present), or MeshConfig.Order; the last axis
// varies fastest. Mesh.Coords and Mesh.Coord give a device's coordinates.
//
// # Specs
//
// Resolve maps semantic axis names (Batch, KVLength, Head, ...) to a Spec
// (JAX's PartitionSpec) with a PartitionAxis and a Mode; the decode_*
// overrides apply only in the generation modes ModeDecode and ModeInsert.
// Correct adapts a spec to a tensor's shape and a mesh: padded or truncated
// to the rank, with every entry that names an axis the mesh lacks, or that
// does not divide its dimension, dropped to None (replicated).
//
//	spec, _ := sharding.ResolveFor(sharding.DefaultPartitionAxis(), sharding.TransformerKVAxes(),
//		sharding.ModePrefill, []int{8, 2048, 8, 128}, mesh)
//	slices, _ := sharding.ShardSlices([]int{8, 2048, 8, 128}, spec, mesh)
//	parts, _ := sharding.Split(key, spec, mesh)            // one tensor per device
//	full, _ := sharding.Join(parts, spec, mesh, key.Shape()) // checks replicas agree
//
// ShardSlices gives each device's index ranges and says which devices hold
// replicas (Slice.Shard, Slice.Replica, Slice.Primary); Slice.Intersect
// turns a write to a box of the full tensor into a write to one shard.
//
// # Budgets
//
// ShardBytes and BytesPerDevice give the bytes a device holds of a tensor
// or a whole cache; CheckBudget compares them with each device's memory.
// PagedPages is EasyDeL's page-count formula with the kv heads sharded
// over the head axis (replicated when the head-axis size does not divide
// num_kv_heads); it agrees with layers/paged.NewMetadata. Budgets that do
// not fit are errors wrapping ErrBudget that name the shortfall in bytes.
//
// # Deviations from EasyDeL
//
//   - Errors instead of silent results: an unknown mode, a mesh whose
//     device count is not the product of its axis sizes, a spec that does
//     not fit its tensor in ShardSlices/Split/Join, replicas that differ
//     in Join, and budgets that do not fit are errors that name the value.
//   - Correct keeps the tensor's rank for an all-None spec (EasyDeL returns
//     the rank-less PartitionSpec(); both mean replicated).
//   - Resolve takes Empty ("_") where EasyDeL also accepts None, and no
//     composite (list-valued) entries.
//   - PagedPages budgets the smallest device (EasyDeL reads device 0), and
//     a head axis that is not in the mesh means 1 shard (EasyDeL raises a
//     KeyError).
//   - PartitionAxis follows eformer v0.0.38 (spec section 5): kv_head_axis
//     defaults to None, KV_HEAD_DIM reads decode_attention_kv_dim_axis in
//     every mode, and there is no attention_kv_dim_axis field (newer
//     eformer releases differ). Its JSON rejects unknown fields.
package sharding
