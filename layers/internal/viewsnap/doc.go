// Package viewsnap is the binary snapshot format shared by the caches that
// are a list of per-layer views (transformer, mamba, mamba2, lightning): a
// tensor.Snapshot (the safetensors layout) whose entries for view i are
// named "views.<i>.<field>".
//
// The header's metadata holds "format" (the package's format string, one
// for a single view and one for a cache), "views" (the number of views) and,
// for each view i, either "views.<i>.empty" = "true" for an empty view
// (EasyDeL's None) or the view's own entries: by convention
// "views.<i>.metadata" (the view's metadata as JSON), "views.<i>.layer_index"
// when the view has one, and whatever tensors, int32 arrays and strings the
// package stores. A Codec does the list-level work (format, count, empty
// marks, rejecting entries no view claims) and leaves each view's entries to
// the package's Put and Get functions, which use an Entry.
//
// Every decoding error wraps the package's own snapshot sentinel (e.g.
// mamba.ErrSnapshot), given in Codec.Err, and decoding never panics on
// malformed input.
package viewsnap
