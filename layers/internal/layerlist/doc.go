// Package layerlist is the per-layer plumbing of the caches that hold one
// view per layer (mamba, mamba2, lightning): building the list, reading and
// replacing a layer's view, applying a view update to one layer or to every
// non-empty layer, and Insert's layer-by-layer pairing, all on immutable
// slices (every change returns a new slice; the input is never modified).
// It also holds what those caches' views share: their optional layer index
// (Index), and the checks of shard views before a join (CheckParts,
// CheckLayer).
//
// An entry may be the empty view (EasyDeL's None), the view type's zero
// value. The functions report errors through an Ops value, which carries the
// calling package's sentinel errors (e.g. mamba.ErrOutOfRange), with
// EasyDeL's messages: "list index out of range" for a layer out of range
// and "Cache view for layer N is None" for an update of an empty layer.
package layerlist
