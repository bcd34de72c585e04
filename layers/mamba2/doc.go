// Package mamba2 is kvmesh's Mamba2 recurrent state cache, the Go
// counterpart of EasyDeL's Mamba2CacheMetaData, Mamba2CacheView and
// Mamba2Cache (easydel.layers.caching.mamba2, spec section 9).
//
// A View holds one layer's conv state (B, intermediate_size +
// 2·n_groups·state_size, conv_kernel_size), the last K raw [x | B | C]
// inputs of every channel with the oldest in column 0, its SSM state
// (B, num_heads, head_dim, state_size), per-row positions and the
// seqlen_offset a mixer tests (> 0 means decode). A Cache is one View per
// layer. Shapes, the validation order and messages of NewMetadata, and the
// update_conv_state semantics (clip the position to [0, K-1], roll left by
// one, write the new column) follow EasyDeL.
//
// A decode step of a Mamba2 mixer:
//
//	v, err := v.UpdateConvState(xBC, K-1) // xBC is (B, conv_dim)
//	window := v.ConvStates()              // (B, conv_dim, K): the last K inputs
//	...                                   // conv, SSD recurrence -> S
//	v, err = v.UpdateSSMState(S)          // S is (B, H, P, N)
//	cache, err = cache.UpdateSeq(1)       // once per forward call, all layers
//
// A prefill sets the whole window at once with UpdateConvStatePositions and
// positions 0..K-1 (the last K inputs, left-padded with zeros).
//
// # Versions without copies
//
// Every value is immutable: each update returns a new View or Cache and
// leaves its receiver and inputs untouched. States are stored with
// tensor.NewChunked in one chunk per batch row, so ResetRows and Insert
// touch only the rows they change and share the others, Reset allocates no
// state storage, and an old version keeps its bytes while newer versions
// are written. These states are O(batch), not O(context): an update of all
// rows writes the whole state, which is the size of its input.
//
// # Deviations from EasyDeL
//
//   - Functional everywhere: EasyDeL's update_conv_state, update_ssm_state,
//     reset and update_seq mutate the views (and its cache-level methods
//     return caches sharing the mutated views).
//   - NewMetadata works: EasyDeL's create passes its misspelt parition_axis
//     to the constructor and always raises TypeError. The field is
//     partition_axis, kept as opaque JSON; a negative num_hidden_layers and
//     invalid partition_axis JSON are errors too.
//   - Init takes the layer count from the metadata (EasyDeL's init_cache
//     takes a separate num_hidden_layers); no partition_specs (View.Specs
//     resolves [BATCH, HEAD, LENGTH] for a sharding.Mesh, and View.Split /
//     JoinViews cut a view into per-device views and back); the dtype must
//     be given (EasyDeL defaults to bfloat16).
//   - Errors, not exceptions or broadcasting: an empty view gives an error
//     wrapping ErrEmpty with EasyDeL's message ("Cache view for layer 0 is
//     None"), a layer out of range one wrapping ErrOutOfRange (EasyDeL's
//     IndexError), inputs must have exactly the state's shape, and
//     UpdateSeq rejects a negative count or an overflow. Inputs are
//     converted to the cache dtype, as astype does. Cache positions are
//     clipped to [0, K-1], as in EasyDeL, whose tests assert the clipping.
//   - Reset also zeroes positions and seqlen_offset (EasyDeL keeps them, so a
//     reset view would still take the decode path); Cache.Reset keeps empty
//     views empty.
//   - Additions: UpdateConvStatePositions (the array cache_position form),
//     SeqlenOffset, ResetLayer, ResetRows and Insert, and lossless binary
//     snapshots (safetensors layout; EasyDeL's to_dict stringifies arrays).
//   - Not provided: concatenate_to_cache (NotImplementedError in EasyDeL) and
//     the empty Mamba2Metadata runtime class.
package mamba2
