package transparency_test

import (
	"html"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCommandsVerifyTheBackend runs the commands the page of a real
// backend prints, as a reader would: it builds conftrace from this
// checkout and runs the verify command and the governance command
// (with the backend's governance set for the file the page leaves to the
// reader); both must verify the backend.
func TestCommandsVerifyTheBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/conftrace")
	}
	t.Parallel()
	lb := startBackend(t)
	resp, err := http.Get(lb.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	page := string(body)
	if n := strings.Count(page, "<svg "); n == 0 {
		t.Error("no statistics chart on the page of a backend that released three days")
	}
	command := func(id string) []string {
		m := regexp.MustCompile(`(?s)<pre class="command" id="` + id + `"><code>(.*?)</code></pre>`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no %s on the page", id)
		}
		return strings.Split(html.UnescapeString(m[1]), "\n")
	}
	verify, governance := command("verify-command"), command("governance-command")
	if len(verify) != 2 || verify[0] != "go build -o conftrace ./cmd/conftrace" {
		t.Fatalf("verify commands %q: want the build of conftrace, then verify", verify)
	}

	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "conftrace"), "./cmd/conftrace")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", verify[0], err, out)
	}
	gov, err := lb.Governance.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "governance.txt"), gov, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{verify[1], strings.ReplaceAll(governance[0], "GOVERNANCE-FILE", "governance.txt")} {
		// The commands are single words apart: nothing to unquote.
		if strings.ContainsAny(line, `"'\$;&|<>`+"`") {
			t.Fatalf("command %q needs a shell", line)
		}
		args := strings.Fields(line)
		cmd := exec.Command(filepath.Join(dir, strings.TrimPrefix(args[0], "./")), args[1:]...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", line, err, out)
		}
	}
}
