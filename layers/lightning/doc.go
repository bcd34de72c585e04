// Package lightning is kvmesh's lightning (linear attention) state cache,
// the Go counterpart of EasyDeL's LightningCacheMetaData, LightningCacheView
// and LightningCache (easydel.layers.caching.lightning, spec section 10),
// with the update rule of MiniMax lightning attention (spec section 11.7,
// Hugging Face's MiniMaxLightningAttention).
//
// A View holds one layer's key_value state (B, H, Dk, Dv), the decayed sum
// of k_jᵀ v_j per head; it is absent (EasyDeL's None) until the first
// update. Update feeds one or many tokens through
//
//	kv[b,h] = exp(-s_h) · kv[b,h] + k[b,h,t]ᵀ · v[b,h,t]
//
// with per-head decay rates s_h (SlopeRates gives MiniMax's). A Cache is one
// View per layer. A decode step of a lightning layer:
//
//	v, err := v.Update(k, val, slopes) // k (B,H,1,Dk), val (B,H,1,Dv)
//	kv := v.KeyValue()                 // o[b,h] = q[b,h] · kv[b,h]
//
// # Versions without copies
//
// Every value is immutable: each update returns a new View or Cache and
// leaves its receiver and inputs untouched. The state is stored with
// tensor.NewChunked in one chunk per batch row, so ResetRows and Insert
// touch only the rows they change and share the others. The state is
// O(batch), not O(context): an update writes all of it.
//
// # Deviations from EasyDeL
//
//   - NewMetadata validates (EasyDeL's create does not): every given size
//     must be positive, the resolved key and value heads must agree, and
//     partition_axis (kept as opaque JSON) must be valid JSON. Sharding
//     comes from View.Specs ([BATCH, HEAD, _, _] for a sharding.Mesh) and
//     View.Split / JoinViews, not from the metadata.
//   - The view has real, functional updates (Update, UpdateKeyValue, Reset,
//     ResetRows, Insert); EasyDeL's concatenate_to_cache is a broken copy of
//     the transformer one and its models assign key_value in place, decaying
//     an existing state by exp(-s) per chunk instead of per token.
//   - The state's dtype is fixed when the view is made (Init and NewView take
//     it), and inputs are converted to it; the recurrence runs in float64 and
//     is rounded to the dtype once per call.
//   - Errors instead of exceptions: an empty view gives an error wrapping
//     ErrEmpty with the message of EasyDeL's other state caches ("Cache view
//     for layer 0 is None"), a layer out of range one wrapping ErrOutOfRange,
//     and inputs that disagree with the metadata or the state one wrapping
//     ErrIncompatible.
//   - Lossless binary snapshots (safetensors layout), including an absent
//     key_value.
//   - Not provided: the empty LightningMetadata runtime class.
package lightning
