// Package transfer moves one sequence's KV between kvmesh nodes (a prefill
// node to a decode node) over protoactor remote: DESIGN.md section 6.
//
// A Node is an actor system with protoactor remote listening on gRPC, a
// receiver actor, and a side channel: a TCP listener for bulk data
// (bulk.go documents its framing). Node.Send moves a Bundle (named tensors
// plus metadata) to another node. By default the control path is
// kvmesh.v1 messages — a TransferBegin that lists the tensors (its ack
// names the receiver's side channel) and a TransferCommit carrying each
// tensor's CRC-32 — while the tensors' raw bytes stream over one TCP
// connection to the side channel, without protobuf or protoactor's
// batching in between. The receiver commits only when every tensor's size
// and checksum match, so a truncated or corrupted stream applies nothing.
// With Config.Chunked the data travels instead as TensorChunks of at most
// 1 MiB among the actor messages: the slower fallback. Protoactor drops remote messages it cannot deliver
// without telling the sender, so every request is acknowledged
// (TransferAck) and re-sent when its ack is late, and the receiver makes
// every request idempotent: a chunk received twice is stored once, and a
// repeated commit gets the first commit's outcome. Send keeps a window of
// chunks in flight.
//
// On commit the receiver rebuilds the tensors and hands the Bundle to the
// Config.Handler outside the actor; for KV, the handler calls ApplyPaged,
// which writes the sequence into the receiving cache as a new version
// through the runtime API (one Step of stored-rows writes). The receiving
// cache is embedded (*actors.Cache) or clustered (*cluster.Cache): any
// Cache, the part of the runtimes' API ApplyPaged uses. PagedSequence
// builds the bundle on the sending side from a published version: the
// sequence's pages of every layer, gathered through its page table in
// their stored form, and recurrent states if given.
//
// gRPC limits are raised the same way on both sides (server, dial and
// call options: RemoteOptions), and protoactor's endpoint writer batches
// at most Config.BatchSize messages per frame, so a frame stays under the
// limit. With Config.TLS both sides use mutual TLS, on gRPC and on the side
// channel alike (the same certificates): a peer without a certificate
// signed by the CA is refused in the handshake.
//
// Deviations and limits: EasyDeL has no transfer (it is JAX-local); this
// is kvmesh's own. A paged sequence travels in its stored form
// (paged.View.GatherStored): a quantized view's int8 or NF4 codes and
// scales byte for byte, with the storage (dtype, quantization, NF4 block)
// in the bundle metadata, so it arrives exactly and in fewer bytes than
// its values (for 13 tokens of 2 kv heads × 64 in 2 layers: 6864 bytes as
// int8 with bfloat16 scales, 3744 as NF4/32 with float16 absmax, against
// 13312 dequantized); an unquantized view's values travel as before.
// ApplyPaged writes the rows verbatim (actors.PagedStoredWrite) and
// refuses a receiving cache stored otherwise, naming both formats, rather
// than converting: a conversion is the caller's explicit choice (Gather
// on the sender, PagedWrite prefill writes on the receiver). The stored
// write also travels on the cluster wire (kvmesh.v1 PagedStoredWrite:
// storage, codes and scales byte for byte), so a decode node whose caches
// are clustered receives a sequence exactly as an embedded one does; a
// clustered receiver's refusal is the grain's status (*actors.StatusError
// with the message naming both formats), or, on a mesh, the client's
// refusal wrapping paged.ErrStorageMismatch. A hybrid
// sequence's recurrent states travel in the same bundle: RecurrentRow
// packs a batch row of every layer of a Mamba, Mamba2 or lightning cache, and
// ApplyRecurrent writes them into a row of the receiving state cache as
// one step, as ApplyPaged writes the pages. The receiver keeps the
// outcome of every committed transfer (a few bytes each) for the node's
// lifetime so that re-sent commits stay idempotent. On the bulk path a
// failed stream is re-sent whole on a new connection; bytes the receiver
// already has are skipped, so a stream is idempotent too, but a tensor
// whose checksum mismatched cannot be repaired by a re-send (its transfer
// fails; the sender starts a new one). The receiver holds the tensors it
// receives as chunks of up to 1 MiB (or one chunk when the element count
// has no divisor of a useful size).
package transfer
