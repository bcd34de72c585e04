// Package engine is kvmesh's serving engine: a continuous-batching
// scheduler that serves a seeded synthetic chat workload with the tiny
// hybrid model of layers/reference on the embedded actor runtime (package
// actors), and reports what it measured. It is what `kvmesh run` runs.
//
// # The workload
//
// Conversations of 1..Turns turns over a few shared system prompts arrive
// as a Poisson process (ArrivalRate conversations per step); a turn's
// prompt is the system prompt, every earlier user message and reply, and a
// new user message, so requests share prefixes across conversations and
// within one. Lengths are drawn uniformly from their ranges; everything but
// the replies (which the model generates) is fixed by the seed.
//
// # A step
//
// Each step, every running sequence, in admission order, gets its decode
// token or its next prefill chunk while the step's token budget lasts;
// then waiting requests are admitted while slots, budget and pages remain.
// Pages come from the paged cache's page-manager actor, a pagemanager.Pool
// (AddSequence, AppendTokens, FreeSequence): a request takes the longest
// cached prefix and pages for one chunk; later chunks and decode tokens
// append to it. When the pool runs out of pages, the latest admitted
// sequence is preempted: its pages are freed (they stay cached) and it goes
// back to the head of the queue, to be recomputed with every token it has
// generated as its prompt. A finished request frees its pages.
//
// The step's work then runs through one transaction per cache (the paged
// KV cache of the attention layers, the Mamba2 and lightning state caches):
// reference.Hybrid.Step writes each layer with Txn.WriteLayer and reads the
// staged view it gets back (attention attends over the pages it just
// wrote), and the transactions commit. Each sequence's recurrent states
// live in its batch slot.
//
// # Prefix caching in a hybrid model
//
// Cached attention pages alone cannot resume a hybrid model: its Mamba2 and
// lightning layers need their state at the same token. The engine keeps a
// recurrent-state checkpoint at every page boundary its sequences compute,
// keyed by the page's hash-chain key (pagemanager.HashPage), and serves a
// hit only up to the last boundary that has one (Report.PrefixHitRate;
// Report.AttentionHitRate is what the pages alone would give). It follows
// the pool's keys through the KV events the page-manager actor publishes
// on the actor system's event stream, and drops a checkpoint when its key
// leaves the cache. It never lets a request hit pages that another
// sequence has registered but not computed yet: such a request waits for
// them (Report.Deferrals). The runtime's pool actor does not expose
// Pool.PutCheckpoint, so the engine does this bookkeeping itself instead of
// using a Hybrid pool.
//
// # Correctness
//
// Config.Verify re-runs a sample of finished requests with
// reference.Hybrid.Generate, which recomputes the whole sequence for every
// token with no cache at all, and requires the same tokens; the model runs
// in float64 on float64 caches, so both paths agree exactly. The sample
// prefers preempted requests and prefix hits. After the run the engine
// checks, through the page-manager actor, that every page is free again.
//
// # Backends
//
// Run serves on a fresh embedded runtime. RunWith serves through any
// Backend: Embedded(rt) for an actors.Runtime, Clustered(rt) for a
// cluster.Runtime, whose layers are grains on cluster members while the
// pool stays in this process (kvmesh run --members). The report is the
// same but for the timings.
//
// # Snapshots
//
// Config.Snapshot, when set, receives each cache's final committed version
// once the last step has committed, on either backend (a clustered cache's
// Current reads its views from the grains); MarshalVersion encodes one as
// its kind's cache snapshot, the file `kvmesh run --snapshot DIR` writes
// and `kvmesh inspect` reads.
package engine
