// Package transfer moves one sequence's KV between kvmesh nodes (a prefill
// node to a decode node) over protoactor remote: DESIGN.md section 6.
//
// A Node is an actor system with protoactor remote listening on gRPC and a
// receiver actor. Node.Send moves a Bundle (named tensors plus metadata) to
// another node as kvmesh.v1 messages: a TransferBegin that lists the
// tensors, each tensor's data in TensorChunks of at most 1 MiB, and a
// TransferCommit. Protoactor drops remote messages it cannot deliver
// without telling the sender, so every request is acknowledged
// (TransferAck) and re-sent when its ack is late, and the receiver makes
// every request idempotent: a chunk received twice is stored once, and a
// repeated commit gets the first commit's outcome. Send keeps a window of
// chunks in flight.
//
// On commit the receiver rebuilds the tensors and hands the Bundle to the
// Config.Handler outside the actor; for KV, the handler calls ApplyPaged,
// which writes the sequence into the receiving cache as a new version
// through the runtime API (one Step of prefill writes). PagedSequence
// builds the bundle on the sending side from a published version: the
// sequence's pages of every layer, gathered through its page table, and
// recurrent states if given.
//
// gRPC limits are raised the same way on both sides (server, dial and
// call options: RemoteOptions), and protoactor's endpoint writer batches
// at most Config.BatchSize messages per frame, so a frame stays under the
// limit. With Config.TLS both sides use mutual TLS: a peer without a
// certificate signed by the CA is refused in the handshake.
//
// Deviations and limits: EasyDeL has no transfer (it is JAX-local); this
// is kvmesh's own. A quantized paged view is sent dequantized (Gather) and
// re-quantized by the receiving cache's writes. Recurrent states travel in
// the bundle, but ApplyPaged writes only the paged layers; the handler
// writes states into a Mamba/Mamba2 cache itself. The receiver keeps the
// outcome of every committed transfer (a few bytes each) for the node's
// lifetime so that re-sent commits stay idempotent.
package transfer
