// Package cluster is kvmesh's clustered runtime (DESIGN.md section 6): cache
// layer shards are protoactor cluster grains, identity
// cache/<id>/layer/<l>/shard/<s>, placed on the members by protoactor's
// rendezvous-hash identity lookup, with the automanaged provider (a static
// member list, no external service) by default and etcd optionally.
//
// StartMember runs a member that hosts shard and page-manager grains
// (kvmesh node). NewRuntime joins the cluster as a client and gives the
// embedded runtime's Go API for every cache kind (transformer, paged,
// Mamba, Mamba2, lightning), unsharded or cut over a mesh (a grain per
// layer and device): NewCache, Cache.Step, Begin/WriteLayer/Commit/Abort,
// Current, Snapshot, Insert, Close, and a paged cache's pool (AddSequence,
// AppendTokens, ForkSequence, FreeSequence), with byte-identical results.
// The grains apply writes with actors.Apply and cut them with
// actors.SplitWrite, the embedded runtime's own code. A step or a
// transaction stages its writes on every layer's grains and commits all
// of them only when every one staged them; a transaction may write a layer
// several times (each write applies on the view the earlier ones staged).
//
// EasyDeL's HBMPageManager also runs as a grain (NewPageManager, identity
// cache/<id>/pages), for paged caches allocated the EasyDeL way. A paged
// cache's Pool stays with the coordinating client (the scheduler
// keeps the page table and the prefix cache, as vLLM's does; the members
// keep the KV), its KV events published on the client's event stream.
// actors/engine serves through either runtime (kvmesh run --members).
//
// Every grain message's payload stays within 1 MiB: a larger write goes
// in GrainParts, and a larger reply (a write's staged view, a read) is
// fetched in parts (GrainFetch). The client keeps the views its writes
// returned, so reading the current version asks each grain only to
// confirm it holds it.
//
// Grain state lives in memory: when a member dies, protoactor re-activates
// its grains elsewhere, empty. Every grain draws a random epoch when it
// activates, the client keeps the epoch each layer shard had when the
// cache was created, and a grain asked for another epoch's state answers
// CODE_STATE_LOST: the client returns ErrStateLost naming the cache, the
// lost layers and the sequences, never zeros. Re-creating the cache
// (NewCache with the same id) starts it again at version 0.
//
// Remote traffic uses transfer.RemoteOptions: gRPC limits raised the same
// way on both sides, and optional mutual TLS.
//
// A step commits on every grain or on none: when a grain refuses its
// commit after others have made theirs, Txn.Commit undoes those (a
// rollback to the version before, which every grain keeps), so the cache
// stays at its base version and usable; only a member lost mid-commit
// leaves the layers disagreeing, which the error says.
//
// A grain keeps the last Config.History published versions
// (DefaultHistory, 16, by default), as the embedded runtime does;
// Snapshot of an older one is ErrNotFound. Versions share unchanged
// storage, so a kept version costs what its writes changed.
//
// A contiguous or paged cache stored quantized (TransformerSpec or
// PagedSpec Quantization int8 or NF4) runs clustered as embedded, on a
// mesh too: its grains hold the codes and scales of their rows and kv
// heads, and an inserted quantized view travels with its codes and scales.
// A stored-rows paged write (actors.PagedStoredWrite, what
// transfer.ApplyPaged steps with) travels too, as its storage, codes and
// scales (or values) byte for byte: on a mesh the client cuts it by kv
// heads (actors.SplitWrite) and each grain gets its heads' rows, so a
// sequence moved to a decode node lands in its clustered cache exactly.
//
// Cache.Insert puts a prefilled contiguous cache into batch slots as the
// embedded runtime's does: each layer's view travels to its grains as a
// snapshot (on a mesh, each device gets the rows it owns).
//
// Limits: a spec's PartitionAxis must name mesh axes in valid UTF-8
// (any mesh, PartitionAxis and Mode travel otherwise, so a cache can cut
// kv heads over tp, use a tp-major device order or resolve its specs in
// prefill mode, as embedded); a paged spec's Pool stays with the client; the automanaged provider's health endpoint is
// plain HTTP even with mutual TLS (protoactor's provider has no TLS
// option), it carries membership only.
package cluster
