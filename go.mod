module github.com/kvmesh/kvmesh

go 1.26

require (
	github.com/stretchr/testify v1.12.1 // indirect
	github.com/x448/float16 v0.8.4 // indirect
)
