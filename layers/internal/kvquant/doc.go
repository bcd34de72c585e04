// Package kvquant is the storage of the key and value tensors of the
// transformer and paged KV caches: a tensor of rows of Width values (the
// head dim, the last axis) kept either as values in the cache dtype or
// quantized row by row, as int8 codes with one scale per row or as NF4 codes
// (two per byte, high nibble first) with one absmax per block of a row
// (EasyDeL's EasyQuantizer formats, spec section 4).
//
// A Store is one such tensor: Data (the values, or the codes) and Scales
// (absent when unquantized), stored in chunks of whole rows with the same
// rows per chunk in both, so the caches' append-in-place and copy-on-write
// chunk semantics (tensor.Editor) carry over unchanged. A write quantizes
// only the rows it writes (Format.Encode, then Editor.WriteRows); reads
// dequantize (Store.ReadRows, Store.Dequantize). Nothing ever re-quantizes or
// materialises the whole tensor on a write, and the stored form stays
// quantized across any number of writes.
//
// Config is the caches' storage setting (their Storage types convert to
// it): its quantization checks and the defaulting of its NF4 block are shared
// here.
//
// Errors are plain messages; the calling package wraps them with its own
// sentinel errors.
package kvquant
