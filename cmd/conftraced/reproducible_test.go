package main

import (
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// releaseBuild builds the measured image. The README gives auditors this
// exact line; TestReproducibleBuild checks that it gives the same bytes
// from any checkout.
const releaseBuild = "CGO_ENABLED=0 go build -trimpath -buildvcs=false -o conftraced ./cmd/conftraced"

// TestReproducibleBuild builds the measured image twice, from two copies
// of the source at different paths and the second with an empty build
// cache, as two auditors on two machines would, and requires the same
// bytes: the measurement a phone pins must be reproducible from source.
func TestReproducibleBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image twice, once with an empty build cache")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte(releaseBuild)) {
		t.Errorf("README.md does not give auditors the release build command %q", releaseBuild)
	}
	files := sourceFiles(t, root)
	base := t.TempDir()
	first := copyTree(t, root, files, filepath.Join(base, "a"))
	second := copyTree(t, root, files, filepath.Join(base, "another", "checkout"))
	h1 := build(t, goTool, first, "")
	h2 := build(t, goTool, second, t.TempDir())
	if h1 != h2 {
		t.Fatalf("two builds of the same source differ: %x and %x", h1, h2)
	}
}

// sourceFiles lists the files a checkout holds: git's, when root is a git
// checkout, otherwise every file outside .git.
func sourceFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		return strings.Fields(string(out))
	}
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && d.Name() == ".git":
			return filepath.SkipDir
		case d.Type().IsRegular():
			rel, err := filepath.Rel(root, path)
			files = append(files, rel)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// copyTree copies files from root to dst; files git lists but the working
// tree has deleted are skipped.
func copyTree(t *testing.T, root string, files []string, dst string) string {
	t.Helper()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// build runs releaseBuild in dir, with gocache as the build cache unless
// empty, and returns the SHA-256 of the image: the simulated TEE's
// measurement of it.
func build(t *testing.T, goTool, dir, gocache string) [sha256.Size]byte {
	t.Helper()
	args := strings.Fields(releaseBuild)
	cmd := exec.Command(goTool, args[2:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if gocache != "" {
		cmd.Env = append(cmd.Env, "GOCACHE="+gocache)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in %s: %v\n%s", releaseBuild, dir, err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "conftraced"))
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
