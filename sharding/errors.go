package sharding

import "errors"

// Sentinel errors; the returned errors wrap them with the offending values.
var (
	// ErrMesh reports a MeshConfig that does not describe a valid mesh, or
	// a device or coordinate that is not in the mesh.
	ErrMesh = errors.New("sharding: bad mesh")
	// ErrPartitionAxis reports a PartitionAxis with an empty or repeated
	// mesh axis name, or a PartitionAxis JSON that does not decode.
	ErrPartitionAxis = errors.New("sharding: bad partition axis")
	// ErrUnknownAxis reports a semantic axis name that PartitionAxis does
	// not know (EasyDeL's "Unknown semantic axis name").
	ErrUnknownAxis = errors.New("sharding: unknown semantic axis")
	// ErrMode reports a runtime mode that is not one of the four modes.
	ErrMode = errors.New("sharding: unknown mode")
	// ErrSpec reports a partition spec that does not fit a shape or a
	// mesh: wrong rank, an axis not in the mesh, a dimension not divisible
	// by its shard count, or a mesh axis used twice.
	ErrSpec = errors.New("sharding: bad partition spec")
	// ErrShape reports a tensor, shape or box that does not fit the
	// operation.
	ErrShape = errors.New("sharding: bad shape")
	// ErrReplicaMismatch reports shards that should be replicas of each
	// other but hold different bytes.
	ErrReplicaMismatch = errors.New("sharding: replicas differ")
	// ErrBudget reports a cache that does not fit in its devices' memory.
	ErrBudget = errors.New("sharding: memory budget too small")
)
