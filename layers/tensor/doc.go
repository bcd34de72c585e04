// Package tensor is kvmesh's small tensor library: dtypes, row-major tensors
// over chunked storage, dtype conversion and the int8 and NF4 storage formats
// that EasyDeL's EasyQuantizer uses for KV caches.
//
// It is not a numerical library: it holds, moves and converts values; the
// math that reads caches lives in layers/reference.
//
// # Storage
//
// A Tensor is an immutable value. Its elements, in row-major order, live in
// equal-size chunks; a dense tensor has one chunk. Tensors share chunks, so
// a cache can publish a new version that differs from the previous one in a
// few chunks without copying the rest (structural sharing). The chunks of a
// cache are written through an Editor, which appends at each chunk's tip in
// place and copies a chunk (copy-on-write) only when the write lands behind a
// tip that another version may see. Readers of an older version are safe as
// long as they read what that version wrote: the cache views guarantee it by
// reading only positions below their own index or length.
//
// # Quantization
//
// Int8 is symmetric per last axis with scale = amax/127 + tiny; NF4 uses the
// 16-level NormalFloat table with an absmax per block and packs two codes per
// byte, high nibble first. Both follow EasyDeL (spec section 4); NF4 returns
// an error where EasyDeL silently leaves the array unquantized.
package tensor
