// Package rawjson normalizes the JSON values that cache metadata keeps
// verbatim without interpreting them (json.RawMessage fields such as
// EasyDeL's partition_axis in mamba, mamba2 and lightning metadata): it
// compacts them, so that equal values compare and encode equally, maps
// JSON null to nil, and reports invalid JSON with the caller's sentinel.
package rawjson
