// Package transformer is kvmesh's contiguous transformer KV cache, the Go
// counterpart of EasyDeL's TransformerCacheMetaData, TransformerCacheView and
// TransformerCache (easydel.layers.caching.transformer, spec section 6).
//
// A View holds one layer's key and value caches, shaped (B, S, H, D), with a
// per-row write position (index) and a per-row first valid position (starts).
// A Cache is one View per layer. Shapes, index and starts semantics, the
// validation order and messages of NewMetadata and the mask that
// View.ConcatenateToCache returns follow EasyDeL.
//
// # Versions without copies
//
// Every value is immutable: each update returns a new View or Cache and leaves
// its receiver and inputs untouched, while a version's visible bytes (row b,
// positions below index[b]) never change. Keys and values are stored with
// tensor.NewChunked in chunks of C positions of one batch row (C is the
// largest power of two not above 64 that divides S), so a decode write appends
// in place at the row's tip (cost O(B·q·H·D), independent of S), a write
// behind a tip that another version can see copies one chunk, and
// Cache.Insert shares a prefilled row's chunks instead of copying them.
//
// # Quantized storage
//
// A cache created with a Storage of tensor.Int8 or tensor.NF4 holds codes
// and scales (EasyDeL's Array8B and ArrayNF4 layouts, per (b, s, h) row of
// D values) in the same chunk layout, so all of the above holds for them
// too: a decode write quantizes and appends only its own rows. Reads that
// return whole caches (ConcatenateToCache, Key, Value) dequantize the
// visible positions (those below each row's index) into a fresh tensor of
// the same chunk layout, whose other chunks stay unallocated zeros: the
// cost is that of the visible positions, O(B·index·H·D), where EasyDeL's
// materialisation costs O(B·S·H·D). KeyCodes, KeyScales, ValueCodes and
// ValueScales return the stored form; NumBytes the stored size.
//
// # Deviations from EasyDeL
//
//   - Functional everywhere: EasyDeL's TransformerCache.insert, insert_index,
//     insert_starts and __setitem__ mutate the cache; here they return a new
//     Cache.
//   - Errors instead of clamping: a write past S, a slot or layer out of range,
//     a mask of the wrong shape is an error naming the value (EasyDeL clamps
//     dynamic_update_slice starts and keeps growing index).
//   - Continuous batching: each row writes at its own index, so rows may hold
//     sequences of different lengths.
//   - Token-type ids work for any batch size and are placed at the chunk's
//     absolute position (EasyDeL's only broadcast correctly for B == 1 and
//     assume the chunk starts at position 0).
//   - ConcatenateToCache returns the new full caches by reference (no copy);
//     positions at or past the returned index are masked and unspecified.
//   - NewMetadata also rejects non-positive resolved head counts and head dims
//     and a negative num_hidden_layers, after EasyDeL's own checks.
//   - Cache.FromPure keeps each view's layer index (EasyDeL's from_pure sets it
//     to None).
//   - Snapshots (View.MarshalBinary, Cache.MarshalBinary) are lossless binary
//     files in the safetensors layout; EasyDeL's to_dict stringifies arrays.
//   - Quantized caches stay quantized (NewViewStorage, InitStorage with a
//     Storage of tensor.Int8 or tensor.NF4): each write quantizes only the
//     rows it writes, reads return dequantized values in the cache dtype,
//     and the stored codes and scales stay int8/NF4 across any number of
//     writes, inserts and snapshots. EasyDeL dequantizes and re-quantizes
//     the whole cache on every write. An NF4 block that does not divide the
//     head dim is an error when the view is created (EasyDeL silently
//     stores the cache unquantized). See Storage.
package transformer
