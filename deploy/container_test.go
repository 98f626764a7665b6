package deploy

import (
	"go/version"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one instruction of a Containerfile: its keyword, upper
// case, and the rest of its line, continuation lines joined.
type instruction struct {
	cmd, args string
}

// loadContainerfile reads deploy/container/Containerfile.
func loadContainerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "container", "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var ins []instruction
	var cur strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		line, more := strings.CutSuffix(strings.TrimRight(l, " \t"), "\\")
		cur.WriteString(strings.TrimSpace(line) + " ")
		if more {
			continue
		}
		if s := strings.TrimSpace(cur.String()); s != "" {
			cmd, rest, _ := strings.Cut(s, " ")
			ins = append(ins, instruction{strings.ToUpper(cmd), strings.TrimSpace(rest)})
		}
		cur.Reset()
	}
	return ins
}

// finalStage returns the instructions of the last stage, from its FROM.
func finalStage(ins []instruction) []instruction {
	last := 0
	for i, in := range ins {
		if in.cmd == "FROM" {
			last = i
		}
	}
	return ins[last:]
}

// containerfileUser returns the numeric user and group the image runs as.
func containerfileUser(t *testing.T, ins []instruction) (uid, gid int64) {
	t.Helper()
	var user string
	for _, in := range finalStage(ins) {
		if in.cmd == "USER" {
			user = in.args
		}
	}
	u, g, _ := strings.Cut(user, ":")
	uid, err := strconv.ParseInt(u, 10, 64)
	if err != nil || uid == 0 {
		t.Fatalf("the image runs as user %q, not a numeric non-root user (Kubernetes checks runAsNonRoot by number)", user)
	}
	if gid, err = strconv.ParseInt(g, 10, 64); err != nil || gid == 0 {
		t.Fatalf("the image runs with group %q, not a numeric non-root group", g)
	}
	return uid, gid
}

// releaseBuild returns the release build command, as cmd/conftraced's
// TestReproducibleBuild runs it and the README gives it to auditors.
func releaseBuild(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "cmd", "conftraced", "reproducible_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`const releaseBuild = "([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal("cmd/conftraced/reproducible_test.go no longer holds const releaseBuild")
	}
	return string(m[1])
}

// withoutOutput returns a build command's words with the -o file left
// out, which differs between builds without changing the bytes.
func withoutOutput(words []string) []string {
	if i := slices.Index(words, "-o"); i >= 0 && i+1 < len(words) {
		return slices.Delete(slices.Clone(words), i, i+2)
	}
	return words
}

// The image's binary is built by the release build command, the one
// auditors reproduce, for linux/amd64, with the Go release that go.mod
// needs at least, and no GOFLAGS of the builder's: so the image holds the
// very bytes an auditor rebuilds from the same commit.
func TestContainerfileRunsReleaseBuild(t *testing.T) {
	ins := loadContainerfile(t)
	want := withoutOutput(strings.Fields(releaseBuild(t)))
	var builds []string
	for _, in := range ins {
		if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		parts := strings.Split(in.args, "&&")
		words := strings.Fields(parts[len(parts)-1])
		words = slices.DeleteFunc(words, func(w string) bool { return w == "GOOS=linux" || w == "GOARCH=amd64" })
		builds = append(builds, strings.Join(withoutOutput(words), " "))
	}
	if len(builds) != 1 || builds[0] != strings.Join(want, " ") {
		t.Errorf("the Containerfile builds with %q; the release build is %q (GOOS=linux GOARCH=amd64 and -o aside)", builds, strings.Join(want, " "))
	}
	var goVersion string
	env := map[string]bool{}
	for _, in := range ins {
		if v, ok := strings.CutPrefix(in.args, "GO_VERSION="); in.cmd == "ARG" && ok {
			goVersion = v
		}
		if in.cmd == "ENV" {
			for _, w := range strings.Fields(in.args) {
				env[w] = true
			}
		}
	}
	if !env["GOFLAGS="] || !env["GOTOOLCHAIN=local"] {
		t.Error("the build stage does not clear GOFLAGS and forbid a toolchain download (ENV GOTOOLCHAIN=local GOFLAGS=)")
	}
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil || !version.IsValid("go"+goVersion) || version.Compare("go"+goVersion, "go"+string(m[1])) < 0 {
		t.Errorf("ARG GO_VERSION=%s: go.mod needs go %s", goVersion, m[1])
	}
}

// The image's last stage holds the static binary and no shell, runs it as
// a non-root user, and starts nothing else.
func TestContainerfileFinalStage(t *testing.T) {
	final := finalStage(loadContainerfile(t))
	base := strings.Fields(final[0].args)[0]
	if base != "scratch" && !strings.Contains(base, "distroless/static") {
		t.Errorf("the final stage is FROM %s; want scratch or a distroless static base (no shell, no libc)", base)
	}
	containerfileUser(t, final)
	var copied, entry bool
	for _, in := range final {
		switch in.cmd {
		case "COPY":
			copied = copied || strings.HasSuffix(in.args, " /conftraced") && strings.HasPrefix(in.args, "--from=")
		case "ENTRYPOINT":
			entry = in.args == `["/conftraced"]`
		case "RUN":
			t.Errorf("the final stage runs %q: it has no shell", in.args)
		}
	}
	if !copied || !entry {
		t.Error(`the final stage does not copy the built binary to /conftraced and run it (ENTRYPOINT ["/conftraced"])`)
	}
}
