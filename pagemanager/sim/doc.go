// Package sim replays request traces through a pagemanager.Pool to measure
// its prefix cache: hit tokens, hit rate and evictions per pool size, under
// vLLM's eviction order or a better one. It is plain synchronous Go; the
// replay is the pool's real code path (Add, Append one token at a time,
// Free), not a model of it.
//
// # Trace format
//
// One JSON object per line, in trace order (ReadTrace, WriteTrace):
//
//	{"id": 0, "conversation": 0, "turn": 0, "prompt_token_ids": [...], "output_token_ids": [...]}
//
// Generate writes synthetic multi-turn chat traces in this format, shaped
// by GenConfig (system prompts, conversation lengths, interleaving).
//
// # Engine model
//
// Replay drives the pool as vLLM 0.16.0's scheduler drives its KV-cache
// manager when requests run one at a time; the rules below are what make a
// VLLM replay match vLLM's own results (pagemanager/testdata/traces) to the
// request. A request has P prompt and N output tokens, the page size is B:
//
//  1. Admission: if ceil((P+N-1)/B) pages exceed the capacity, the request
//     is skipped (no lookup, no allocation) and counted.
//  2. Lookup: the hit is the longest run of leading full prompt pages whose
//     chained keys are cached, capped at floor((P-1)/B) pages (the last
//     prompt token is always recomputed).
//  3. Prefill: the hit pages are taken first (a cached free page is
//     unlinked from the free queue: a request never evicts its own prefix),
//     then ceil(P/B) minus the hit pages come from the free queue, a page
//     that still carries a key being evicted then (lazily). Every full
//     prompt page not yet cached is registered.
//  4. Decode: the output tokens but the last are fed one at a time (the
//     last sampled token is never fed back, so P+N-1 tokens end up
//     cached); a page is taken when the current one is full, and every page
//     that fills, prompt or output, is registered, so the next turn of a
//     conversation can hit through the previous reply.
//  5. Finish: the pages are released last first to the tail of the free
//     queue, keeping their keys until evicted.
//
// The pool starts with its pages free in ascending order. With the VLLM
// policy the free queue is strict LRU; the Shared and Lineage policies
// (pagemanager.EvictShared, pagemanager.EvictLineage) change only which
// free page steps 3 and 4 take.
package sim
