// Package paged is kvmesh's paged KV cache: EasyDeL's PagedAttentionCache
// family (spec section 7) as immutable Go values. It holds and writes
// keys and values in fixed-size pages; it does not allocate pages (that is
// package pagemanager) and does not compute attention (layers/reference).
//
// Metadata (PagedAttentionCacheMetaData) sizes the page pool from a memory
// budget. A View (PagedAttentionCacheView) is one layer's pool of key and
// value pages, shape (num_kv_heads, num_pages_per_layer, page_size,
// head_dim); a Cache holds one View per layer. StepMetadata
// (PagedAttentionMetadata) carries one step's positions and page tables.
// WritePrefill stores a sequence's prefill chunk through its page table;
// WriteDecodes stores one token per decode slot. Page 0 is the dummy page:
// the page manager never hands it out, and inactive slots (position -1) and
// unused page-table entries (0) write there.
//
// A typical step:
//
//	meta, _ := paged.NewMetadata(paged.MetadataConfig{..., Memory: paged.StaticMemory{...}})
//	cache, _ := paged.Init(meta, tensor.BFloat16)
//	v, _ := cache.View(layer)
//	v, _ = v.WritePrefill(k, val, paged.StepMetadata{PrefillLength: n, PrefillPageTable: pages})
//	cache, _ = cache.WithView(layer, v)
//	keys, values, _ := v.Gather(pages, n)
//
// # Versions
//
// Every write returns a new View and leaves its receiver unchanged, so a
// reader holding an older version keeps seeing the same bytes. Pages are
// stored in chunks of one page of one head, shared between versions: a
// decode write costs the bytes of the tokens it writes, whatever the
// context length, and only a page written behind its tip is copied.
//
// # Deviations from EasyDeL
//
//   - Writes are functional (EasyDeL's mutate the view).
//   - Errors instead of clamping: positions past a page table, page
//     indices outside the pool, decode positions below -1, an empty or
//     negative memory budget are errors that name the value.
//   - WritePrefill works at any chunk offset, with any chunk length, and
//     does not write padding tokens.
//   - The memory source is injected (MemorySource) instead of read from
//     device 0.
//   - InitEmpty is a real constructor; the step constructor is
//     InitEmptyStep.
//   - Views and caches have a lossless binary snapshot (safetensors
//     layout); metadata JSON uses EasyDeL's field names.
//   - Quantized pages stay quantized (NewViewStorage, InitStorage with a
//     Storage of tensor.Int8 or tensor.NF4): each write quantizes only the
//     rows (tokens of one head) it writes, reads return dequantized values
//     in the cache dtype, and the pages stay int8/NF4 across writes and
//     snapshots. EasyDeL quantizes the pool at init and its first write
//     silently turns it dense. An NF4 block that does not divide the head
//     dim is an error at creation. KeyPages and ValuePages of a quantized
//     view dequantize the whole pool (O(pool)); Gather only the pages it
//     reads; KeyCodes, KeyScales, ValueCodes and ValueScales return the
//     stored form, NumBytes its size. See Storage.
package paged
