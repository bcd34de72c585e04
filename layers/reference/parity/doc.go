// Package parity checks kvmesh's caches and reference mixers against golden
// vectors produced by external reference implementations (state-spaces/mamba,
// causal-conv1d, Hugging Face MiniMax and GQA attention; see golden/README.md).
//
// A case file holds inputs and the references' outputs in float64 and in
// float32. Run feeds a case through the caches in every schedule the file
// asks for — the whole sequence at once, token by token, and each prefill
// split followed by single-token steps; attention through both the
// contiguous and the paged cache — once in float64 and once in float32 (on
// the inputs rounded to float32), and reports the largest absolute
// difference of every output and state against each reference. It assumes
// nothing about sizes: every dimension comes from the file.
//
// The six golden files are embedded (Golden), so `kvmesh parity` runs
// anywhere.
package parity
