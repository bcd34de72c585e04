// Package sharding will hold the device mesh, EasyDeL's PartitionAxis
// defaults, partition-spec resolution, shard slices and memory budgets
// (DESIGN.md section 1; spec section 5). It has no code yet.
package sharding
