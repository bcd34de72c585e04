// Package convssm is the state of a Mamba-family cache view (mamba,
// mamba2): a conv state (B, C, K) holding each channel's last K inputs,
// oldest in column 0, an SSM state (B, ...) of the same dtype, both in
// package rowstore's row-chunked layout, and (B,) int32 positions.
//
// A State is an immutable value: every operation returns a new State that
// shares the storage of the rows it did not change. The view packages keep
// their metadata types, the sizes they check and the sharding rules of
// their own sizes; this package does what they have in common: the row and
// column work on a State with the input checks of the views' methods
// (Ops), the conv_states, ssm_states and positions entries of their
// snapshots (package viewsnap), the sharding of a State (ShardOps:
// resolving, checking, splitting and joining its partition specs), the
// glue of a package's metadata to all of these (Layout), and the order of
// the metadata checks EasyDeL's create makes (CheckMetadata).
//
// Failures are reported through an Ops or ShardOps value, which carries
// the calling package's sentinel errors (e.g. mamba.ErrShape,
// mamba.ErrSharding) and axis names, so each package keeps its own error
// identities and messages.
package convssm
