// Package actors will hold kvmesh's protoactor shells: the embedded runtime,
// one actor per cache, layer and shard, and the page-manager actor, each
// owning one value of the core packages (DESIGN.md section 5). It has no code
// yet; the core it will wrap lives in layers, pagemanager and sharding.
package actors
