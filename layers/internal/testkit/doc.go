// Package testkit holds the helpers the state caches' tests share (mamba,
// mamba2, lightning): tensors built from an index function, columns of
// conv windows, and the golden-vector files of
// layers/reference/parity/golden. Only tests import it.
package testkit
