package snapshot_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/snapshot"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Describe a Mamba cache's snapshot, as `kvmesh inspect` does a file, and
// print its summary.
func ExampleDescribe() {
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 3,
		ConvKernelSize: 3})
	if err != nil {
		panic(err)
	}
	cache, err := mamba.Init(meta, tensor.Float32)
	if err != nil {
		panic(err)
	}
	cache, err = cache.WithView(1, mamba.View{}) // layer 1 left empty
	if err != nil {
		panic(err)
	}
	data, err := cache.MarshalBinary()
	if err != nil {
		panic(err)
	}

	info, err := snapshot.Describe(data)
	if err != nil {
		panic(err)
	}
	info.File = "mamba.safetensors"
	fmt.Println(info.Kind, info.Object, info.NumViews, "views, empty:", info.EmptyViews)
	if err := info.WriteText(os.Stdout); err != nil {
		panic(err)
	}

	// A cut snapshot is no safetensors file; kvmesh inspect puts the file
	// name in front of the message.
	_, err = snapshot.Describe(data[:4])
	fmt.Println(errors.Is(err, snapshot.ErrNotSafetensors))
	fmt.Printf("mamba.safetensors: %v\n", err)
	// Output:
	// mamba cache 2 views, empty: [1]
	// mamba.safetensors
	//   format   kvmesh.mamba.Cache/v1 (mamba cache)
	//   views    2, 1 empty: 1
	//   view 0   layer 0: batch 2, float32, conv state [2 4 3], ssm state [2 4 3], positions [0 0]
	//   view 1   empty
	//   tensors  3, 200 bytes (file 704 bytes)
	//     name                 dtype  shape    bytes
	//     views.0.conv_states  F32    [2 4 3]  96
	//     views.0.positions    I32    [2]      8
	//     views.0.ssm_states   F32    [2 4 3]  96
	//     total                                200
	// true
	// mamba.safetensors: not a valid safetensors snapshot: tensor: bad snapshot: 4 bytes, shorter than the 8-byte header length
}
