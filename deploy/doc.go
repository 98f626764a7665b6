// Package deploy holds no code. Its directories hold what it takes to run
// conftraced outside a developer's machine: the container image
// (container), Kubernetes manifests (kubernetes), the Gramine manifest for
// SGX (gramine), and the measured-boot notes for SEV-SNP and TDX (snp,
// tdx). Its tests check those files against cmd/conftraced, the program
// they run: that every argument is a flag conftraced takes, that probes
// ask its health endpoint on the port it listens on, that the image is
// built with the reproducible release build, and that the Kubernetes
// objects decode strictly into their API types and refer to one another
// correctly (a schema check that needs no network).
package deploy
