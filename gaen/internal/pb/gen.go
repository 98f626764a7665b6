// Package pb holds the protocol buffer messages of GAEN key export files,
// generated from export.proto. Package gaen is its only user; nothing outside
// it should depend on these types.
//
// export.pb.go is committed so that building and CI need no protoc. To
// regenerate it after editing export.proto, install protoc (Debian:
// apt-get install protobuf-compiler) and the Go plugin at the version go.mod
// requires of google.golang.org/protobuf, then run go generate:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./gaen/internal/pb
package pb

//go:generate protoc --go_out=. --go_opt=paths=source_relative export.proto
