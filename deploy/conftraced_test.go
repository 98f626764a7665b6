package deploy

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the repository's root, relative to this package.
const repoRoot = ".."

// conftraced is the measured image, built for the test, and its flags.
type conftraced struct {
	bin string
	// flags maps each flag's name to whether it takes a value.
	flags map[string]bool
}

// buildConftraced builds cmd/conftraced and reads its flags from its
// usage text.
func buildConftraced(t *testing.T) *conftraced {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	bin := filepath.Join(t.TempDir(), "conftraced")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/conftraced")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building conftraced: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("conftraced --help: %v\n%s", err, out)
	}
	c := &conftraced{bin: bin, flags: parseFlagDefaults(string(out))}
	if len(c.flags) == 0 {
		t.Fatalf("conftraced --help lists no flags:\n%s", out)
	}
	return c
}

// flagDefault is a line of flag.PrintDefaults naming a flag: "  -name" for
// a boolean, "  -name value" for a flag that takes one.
var flagDefault = regexp.MustCompile(`^  -([a-z][a-z0-9-]*)(?: (\S+))?$`)

func parseFlagDefaults(usage string) map[string]bool {
	flags := map[string]bool{}
	for _, l := range strings.Split(usage, "\n") {
		if m := flagDefault.FindStringSubmatch(l); m != nil {
			flags[m[1]] = m[2] != ""
		}
	}
	return flags
}

// checkArgs runs conftraced with args followed by --help: its own flag
// set parses args, and it exits 0, printing its usage, only if every one
// of them is a flag it takes with a well-formed value (an unknown flag, a
// missing value or a stray argument make it exit 2 first).
func (c *conftraced) checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	cmd := exec.Command(c.bin, append(append([]string(nil), args...), "--help")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		t.Errorf("%s: conftraced refuses the arguments %q:\n%s", where, args, firstLine(out.String()))
	case err != nil:
		t.Fatalf("running conftraced: %v", err)
	}
}

// flagValues returns the values of args by flag name: --name=value, or
// --name value for the flags that takeValue says take one (one dash or
// two).
func flagValues(args []string, takesValue map[string]bool) map[string]string {
	vals := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(args[i], "-"), "-")
		if n, v, ok := strings.Cut(name, "="); ok {
			vals[n] = v
		} else if takesValue[name] && i+1 < len(args) {
			vals[name] = args[i+1]
			i++
		}
	}
	return vals
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
