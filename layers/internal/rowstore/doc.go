// Package rowstore is the row-chunked storage of the recurrent caches'
// state tensors (mamba, mamba2 and lightning): a state of shape (B, ...) is
// a tensor.Tensor with one storage chunk per batch row.
//
// Every write covers whole rows, so each chunk is either unallocated (zeros)
// or fully written, and a tensor's visible bytes never change. An update of
// some rows shares the other rows' chunks with the previous version; zeroing
// a row releases its chunk instead of writing zeros.
//
// The functions that can fail report errors through an Ops value, which
// carries the calling package's sentinel errors (e.g. mamba.ErrShape), so
// each cache package keeps its own error identities and messages.
package rowstore
