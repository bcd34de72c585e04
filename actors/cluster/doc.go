// Package cluster is kvmesh's clustered runtime (DESIGN.md section 6): cache
// layer shards are protoactor cluster grains, identity
// cache/<id>/layer/<l>/shard/<s>, placed on the members by protoactor's
// rendezvous-hash identity lookup, with the automanaged provider (a static
// member list, no external service) by default and etcd optionally.
//
// StartMember runs a member that hosts shard and page-manager grains
// (kvmesh node). NewRuntime joins the cluster as a client and gives the
// embedded runtime's Go API: NewCache, Cache.Step, Cache.Current and
// Close, with byte-identical results. A step stages the write on every
// layer's grain and commits all of them only when every one staged it.
//
// Grain state lives in memory: when a member dies, protoactor re-activates
// its grains elsewhere, empty. Every grain draws a random epoch when it
// activates, the client keeps the epoch each layer had when the cache was
// created, and a grain asked for another epoch's state answers
// CODE_STATE_LOST: the client returns ErrStateLost naming the cache, the
// lost layers and the sequences, never zeros. Re-creating the cache
// (NewCache with the same id) starts it again at version 0.
//
// Remote traffic uses transfer.RemoteOptions: gRPC limits raised the same
// way on both sides, and optional mutual TLS.
//
// Limits (next steps): only Mamba caches run clustered, unsharded (shard
// 0); a paged cache's page manager runs as a grain (NewPageManager,
// identity cache/<id>/pages), but paged layers do not run clustered yet;
// views travel in one message per layer rather than in 1 MiB chunks;
// Results are empty (Mamba steps return nothing).
package cluster
