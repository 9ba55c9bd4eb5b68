package vm

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// vm logs --tail N starts at the last N lines of a 1 GiB serial log without
// reading the rest: it answers at once with exactly those lines.
func TestLogsTail(t *testing.T) {
	f := newFixture(t)
	v, _ := f.stoppedVM(t, "chatty")
	fh, err := os.Create(v.Runtime.SerialLogPath)
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 30
	fh.Truncate(size) // sparse: reading it whole would take seconds and show as NULs
	fh.WriteAt([]byte("boot 1\nboot 2\nlogin: \n"), size)
	fh.Close()
	var out bytes.Buffer
	start := time.Now()
	if err := f.m.Logs(context.Background(), "chatty", api.LogOptions{Tail: 2}, &out); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if out.String() != "boot 2\nlogin: \n" {
		t.Fatalf("--tail 2 = %q (%d bytes), want the last two lines", strings.ToValidUTF8(out.String()[:min(out.Len(), 64)], "?"), out.Len())
	}
	if took > 500*time.Millisecond {
		t.Errorf("--tail 2 of a 1 GiB log took %s", took)
	}
	t.Logf("--tail 2 of a 1 GiB log: %s", took)
}
