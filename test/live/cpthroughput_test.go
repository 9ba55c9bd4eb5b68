package live

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIntegrationLiveCpThroughput measures vm cp of a 100 MiB tree (128
// directories of 8 files of 100 KiB, incompressible) into a guest and
// back, through the guest agent. It reports; it sets no bar.
func TestIntegrationLiveCpThroughput(t *testing.T) {
	e := newEnv(t)
	vm := "cp-" + randHex(2)
	e.must("vm", "create", "--name", vm, "--wait", "agent", "--disk", "2GiB")
	src := filepath.Join(t.TempDir(), "tree")
	buf := make([]byte, 100<<10)
	for d := 0; d < 128; d++ {
		dir := filepath.Join(src, fmt.Sprintf("d%02d", d))
		os.MkdirAll(dir, 0o755)
		for f := 0; f < 8; f++ {
			rand.Read(buf)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", f)), buf, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	e.must("vm", "cp", src, vm+":/root/tree")
	in := time.Since(start)
	out := filepath.Join(t.TempDir(), "back")
	os.MkdirAll(out, 0o755)
	start = time.Now()
	e.must("vm", "cp", vm+":/root/tree", out)
	back := time.Since(start)
	sum := func(dir string) string {
		return run(t, "sh", "-c", "cd "+dir+" && find . -type f | sort | xargs sha256sum | sha256sum")
	}
	if a, b := sum(src), sum(filepath.Join(out, "tree")); a != b {
		t.Errorf("the tree came back different: %s vs %s", a, b)
	}
	mb := float64(1024*100<<10) / (1 << 20)
	t.Logf("vm cp of a %.1f MiB tree (1024 files): host→guest %s (%.1f MiB/s), guest→host %s (%.1f MiB/s)",
		mb, in.Round(time.Millisecond), mb/in.Seconds(), back.Round(time.Millisecond), mb/back.Seconds())
	e.must("vm", "delete", vm)
	e.assertNoLeaks()
}
