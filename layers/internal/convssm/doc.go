// Package convssm is the state of a Mamba-family cache view (mamba,
// mamba2): a conv state (B, C, K) holding each channel's last K inputs,
// oldest in column 0, an SSM state (B, ...) of the same dtype, both in
// package rowstore's row-chunked layout, and (B,) int32 positions.
//
// A State is an immutable value: every operation returns a new State that
// shares the storage of the rows it did not change. The view packages keep
// their metadata, validation and messages about their own sizes; this
// package does the row and column work they have in common, the
// conv_states, ssm_states and positions entries of their snapshots
// (package viewsnap), and the sharding of a State (ShardOps: resolving,
// checking, splitting and joining its partition specs).
//
// Failures are reported through an Ops or ShardOps value, which carries
// the calling package's sentinel errors (e.g. mamba.ErrShape,
// mamba.ErrSharding), so each package keeps its own error identities and
// messages.
package convssm
