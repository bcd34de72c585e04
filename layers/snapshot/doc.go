// Package snapshot describes kvmesh cache snapshots: it decodes a snapshot
// file of any cache kind in full and summarizes its format, kind, views (with
// the metadata that matters for the kind) and tensors, as a value with a JSON
// form and a text form. It is the library behind `kvmesh inspect`.
//
// A snapshot is what View.MarshalBinary or Cache.MarshalBinary of
// layers/transformer, layers/paged, layers/mamba, layers/mamba2 or
// layers/lightning writes (quantized int8 and NF4 storage included): a
// safetensors file whose "format" metadata names the kind, one of Formats.
// Describe decodes it with that kind's UnmarshalView or UnmarshalCache, so a
// snapshot Describe accepts is one the kind accepts whole. A safetensors file
// whose format is absent or does not begin with "kvmesh." is described as a
// plain safetensors file: its tensors are listed, nothing else is checked.
//
// Describe never sees a file name: Info.File is the caller's to set, and the
// errors are phrased to follow a name the caller puts in front of them
// ("snap/kv.safetensors: not a valid safetensors snapshot: ..."). That is why,
// unlike the other kvmesh packages, its error messages carry no package
// prefix; match them with errors.Is against ErrNotSafetensors,
// ErrUnknownFormat and ErrInvalid.
package snapshot
