// Package mamba is kvmesh's Mamba (v1) recurrent state cache, the Go
// counterpart of EasyDeL's MambaCacheMetaData, MambaCacheView and MambaCache
// (easydel.layers.caching.mamba, spec section 8).
//
// A View holds one layer's conv state (B, intermediate_size,
// conv_kernel_size), the last K raw inputs of every channel with the oldest
// in column 0, and its SSM state (B, intermediate_size, ssm_state_size). A
// Cache is one View per layer. Shapes, the validation order and messages of
// NewMetadata, and the update_conv_state semantics (clip the position to
// [0, K-1], roll left by one, write the new column) follow EasyDeL.
//
// A decode step of a Mamba mixer reads the window after the shift-and-write
// and then stores the new SSM state:
//
//	v, err := v.UpdateConvState(x, K-1)   // x is (B, intermediate_size)
//	window := v.ConvStates()              // (B, I, K): the last K inputs
//	...                                   // conv, selective scan -> h
//	v, err = v.UpdateSSMState(h)          // h is (B, I, N)
//
// A prefill sets the whole window at once with UpdateConvStatePositions and
// positions 0..K-1 (the last K inputs, left-padded with zeros).
//
// # Versions without copies
//
// Every value is immutable: each update returns a new View or Cache and
// leaves its receiver and inputs untouched. States are stored with
// tensor.NewChunked in one chunk per batch row, so ResetRows and Insert
// touch only the rows they change and share the others, Reset allocates
// no state storage, and an old version keeps its bytes while newer versions
// are written. These states are O(batch), not O(context): an update of all rows
// writes the whole state, which is the size of its input.
//
// # Deviations from EasyDeL
//
//   - Functional everywhere: EasyDeL's view methods update_conv_state,
//     update_ssm_state and reset mutate the view and return None, so its
//     cache-level methods return caches with None views and mutate the
//     original (its own tests expect the functional behaviour implemented
//     here).
//   - Errors, not exceptions or broadcasting: an empty view gives an error
//     wrapping ErrEmpty with EasyDeL's message ("Cache view for layer 0 is
//     None"), a layer out of range one wrapping ErrOutOfRange (EasyDeL's
//     IndexError), and inputs must have exactly the state's shape (EasyDeL
//     broadcasts). Inputs are converted to the cache dtype, as astype does.
//     Cache positions are clipped to [0, K-1], as in EasyDeL, whose tests
//     assert the clipping.
//   - NewMetadata also rejects a negative num_hidden_layers and a
//     partition_axis that is not valid JSON; partition_axis is kept as
//     opaque JSON. There is no partition_specs argument: View.Specs resolves
//     the states' sharding ([BATCH, HEAD, LENGTH]) for a sharding.Mesh, and
//     View.Split / JoinViews cut a view into per-device views and back. The
//     dtype must be given (EasyDeL defaults to bfloat16).
//   - Cache.Reset keeps empty views empty and zeroes the others.
//   - Additions: UpdateConvStatePositions (the array cache_position form),
//     ResetLayer, ResetRows and Insert, and lossless binary snapshots
//     (safetensors layout; EasyDeL's to_dict stringifies arrays).
//   - Not provided: concatenate_to_cache (NotImplementedError in EasyDeL) and
//     the empty MambaMetadata runtime class.
package mamba
