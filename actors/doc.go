// Package actors is kvmesh's embedded actor runtime: it hosts KV and state
// caches of the five kinds (contiguous, paged, Mamba, Mamba2, lightning) as
// protoactor-go actors in one process and gives a typed Go API over them,
// so that a serving stack writes a whole step of every layer at once and
// reads immutable, numbered versions of the cache (DESIGN.md section 5).
// The cache math lives in the core packages (layers/..., pagemanager,
// sharding); every actor here only owns and moves values of them.
//
// # Actor tree
//
// A Runtime creates an actor system, or runs on the host application's
// (WithActorSystem). Each cache is a small tree:
//
//	cache/<id>             cache actor: the committed versions; coordinates steps and transactions
//	 ├─ layer actor × L    one per layer: applies that layer's writes
//	 │   └─ shard actor × D  sharded caches only: one per device of the mesh
//	 └─ page-manager actor paged caches: serialises allocation (the cache actor forwards page requests)
//
// Only the cache actor holds cache data: the current version, the last few
// published ones (WithHistory) and the staged layers of open transactions
// (the page-manager actor holds the allocator). Layer and shard actors are
// workers that receive the view to write with every request, and keep at
// most the bookkeeping of rounds in flight, so restarting them never loses
// or has to restore anything.
//
// # A step
//
// Cache.Step sends the writes of one step, naming the base version N, to
// the cache actor. It rejects the step at once if N is not current
// (ErrStale: steps are never merged), if too many are in flight
// (ErrBusy, WithMaxInFlight: the runtime's back-pressure) or if the writes
// are malformed; otherwise it sends each written layer's actor its write
// and its view of version N, and counts the replies in its own state. A
// layer actor applies the write with the core package (for a contiguous
// cache, ConcatenateToCache, whose key, value and mask come back in the
// step's Results) and answers with the layer's next view. When every
// layer has answered, the cache actor publishes version N+1, the views of
// N with the written layers replaced, in one assignment: a reader sees N
// or N+1, never a mix. Writes and views travel by reference, never
// serialized or copied, and no actor ever blocks in Receive waiting for
// another (replies are counted per round, and a timer per round ends
// rounds a layer never answers with ErrTimeout, WithTimeout).
//
// # Versions
//
// A Version is a number and one view per layer. Views are immutable
// values of the core packages, so a Version stays readable forever, and
// publishing one copies nothing: each step shares all unchanged storage
// with the version before. Cache.Current returns the current version and
// Cache.Snapshot one of the last WithHistory versions; Version.Layer
// returns a layer's full view. What a version can see of a layer (a
// contiguous row's positions below its index, a paged sequence's tokens)
// never changes; positions past that are unspecified and may be filled in
// place by later steps, so read only what a version can see while steps
// run.
//
// # Transactions and inserts
//
// A model that produces K/V one layer at a time opens a transaction on
// version N (Cache.Begin), writes layers one by one (Txn.WriteLayer, which
// returns what attention needs for that layer; writing a layer again
// builds on its staged view), and publishes all of them as N+1 with
// Txn.Commit, or drops them with Txn.Abort. Staged layers are invisible
// until Commit, and a commit whose base is no longer current fails with
// ErrStale. Cache.Insert puts a prefilled contiguous cache into batch slots
// of every layer as one step, sharing the prefill's storage (a sharded
// cache copies the inserted rows into the parts of the devices that own
// the slots).
//
// # Quantized storage
//
// A contiguous or paged cache may store its keys and values as int8 or
// NF4 codes with per-row or per-block scales (TransformerSpec and
// PagedSpec Quantization and BlockSize; transformer.Storage,
// paged.Storage). Every write quantizes only the rows it writes, with the
// core package, so a version holds the core's codes and scales byte for
// byte, sharded or not: part views hold their rows' and kv heads' codes
// and scales, and Version.Layer joins them verbatim. Inserted rows and
// stored paged rows (PagedStoredWrite) go in as stored, codes and scales;
// rows stored otherwise than the cache are refused with an error naming
// both storages, never re-quantized.
//
// # Failures
//
// Every request waits at most the runtime's timeout (or its context's
// deadline) and every error wraps one of the sentinels (ErrStale,
// ErrTimeout, ErrBusy, ErrNotFound, ErrClosed, ErrInternal, ErrKind,
// ErrInvalid) or a core package's, with a message naming the cache, the
// layer and the offending value. Between actors a failure travels as a
// status code and message (package messages), which StatusError turns back
// into an error that errors.Is matches against the same sentinels. If any
// layer of a step fails, the step fails as a whole and version N stays
// current. A layer or shard actor that panics is restarted by its parent
// (the cache actor, the layer actor), the round it was working on fails at
// once with ErrInternal naming the layer (and the device), and the next
// step runs normally; since neither kind of actor holds committed data,
// every published version stays intact.
//
// # Sharding
//
// A Spec with a Mesh of more than one device creates a sharded cache: each
// layer's view is cut over the mesh by its kind's specs (Spec.PartitionAxis
// in Spec.Mode, by default eformer's: batch rows over ("fsdp", "dp"), the
// heads of paged, Mamba, Mamba2 and lightning layers over tp), and every
// version holds a *Sharded per layer: one part view per device. The layer
// actor of a sharded layer cuts each write by the same specs (the new
// tokens and states by their own specs, masks by batch rows; step metadata
// such as paged page tables is shared by every device), sends each part to
// the shard actor of its
// device, counts their replies, and answers with the next *Sharded. Its
// Result carries one part per device in Result.Parts. Version.Layer (or
// Sharded.Join) joins a layer's parts back into the full view, which holds
// exactly the bytes of an unsharded cache driven with the same writes;
// Sharded.Gather reads one paged sequence across the parts.
//
// With WithMeterProvider the runtime records OpenTelemetry metrics: every
// API call's duration by cache, operation and status code (Code), and a
// paged cache pool's prompt and hit tokens, evictions and free pages.
// actors/telemetry serves them for Prometheus.
//
// The runtime is in-process: it neither places shards on cluster members
// nor serializes anything, and a "device" is a shard actor, not memory on
// an accelerator.
package actors
