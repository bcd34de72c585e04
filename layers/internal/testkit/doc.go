// Package testkit holds the helpers the state caches' tests share (mamba,
// mamba2, lightning, and the internal packages under them): tensors built
// from an index function, columns and windows of conv states, meshes and
// random tensors for sharding tests, edited snapshots, the golden-vector
// files of layers/reference/parity/golden, and harnesses that run the
// checks the packages have in common on each package's own types:
// snapshots (Snapshots), sharding (ShardedWrites, JoinChecks,
// BytesMatchBudget), the conv state of mamba and mamba2 (RollAndWrite,
// ClipFromZero, LastKInputs, ConvertsDType, ConvTrajectory), metadata
// validation (NewMetadataCase) and view comparison (RequireSameHeader,
// RequireSameStates). Only tests import it.
package testkit
