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
// A KV-storage run (Options.KV, `kvmesh parity --kv-dtype`) runs the
// attention cases instead through caches that store keys and values in
// another form — float16, bfloat16, or quantized int8 or NF4 — with the
// attention math in float64, and compares with the float64 references
// within a tolerance derived from the storage's per-element error bound
// (ParseKVStorage). The recurrent cases hold no KV cache and are skipped.
//
// The six golden files are embedded (Golden), so `kvmesh parity` runs
// anywhere.
package parity
