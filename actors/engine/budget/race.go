//go:build race

package budget

// raceBuild reports a race-detector build: the KV transfer budget is not
// measured there (protoactor's remote has data races of its own that the
// detector reports, and a race build's timings mean nothing anyway).
const raceBuild = true
