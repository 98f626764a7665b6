package tsm

import "testing"

func TestDirClientPaths(t *testing.T) {
	c := dirClient{root: "/mnt/tsm"}
	for in, want := range map[string]string{
		"/sys/kernel/config/tsm":                  "/mnt/tsm",
		"/sys/kernel/config/tsm/report/e1/inblob": "/mnt/tsm/report/e1/inblob",
		"/sys/kernel/config/tsm/report/../report": "/mnt/tsm/report",
	} {
		if got, err := c.local(in); err != nil || got != want {
			t.Errorf("local(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/etc/passwd", "/sys/kernel/config/tsmx/report", "/sys/kernel/config/tsm/../../../etc"} {
		if got, err := c.local(bad); err == nil {
			t.Errorf("local(%q) = %q, want an error", bad, got)
		}
	}
}
