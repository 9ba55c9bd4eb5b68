package attack

import (
	"strings"
	"testing"

	"banger/internal/ops"
)

func outputBytes(lines []string) (n int) {
	for _, l := range lines {
		n += len(l)
	}
	return n
}

// TestAttackOperationOutput: a build script (guest code) prints one 1 MiB
// line and then 10,000 lines of 1 KiB. The operation keeps a bounded,
// newest-first view: no line longer than the line cap (marked truncated) and
// no more than the byte cap in all.
func TestAttackOperationOutput(t *testing.T) {
	tr := ops.NewTracker(0)
	op := tr.Begin("image.build", "x")
	op.Output(strings.Repeat("A", 1<<20))
	lines, _ := tr.Output(op.ID(), 0)
	if len(lines) != 1 || len(lines[0]) > 8<<10 || !strings.Contains(lines[0], "truncated") {
		t.Fatalf("a 1 MiB line is kept as %d bytes (want <= 8 KiB with a truncation marker)", len(lines[0]))
	}
	line := strings.Repeat("b", 1023)
	for i := 0; i < 10000; i++ {
		op.Output(line)
	}
	lines, next := tr.Output(op.ID(), 0)
	if n := outputBytes(lines); n > 1<<20 {
		t.Fatalf("output holds %d bytes in %d lines after 10k lines, want <= 1 MiB", n, len(lines))
	}
	if next != 10001 || lines[len(lines)-1] != line {
		t.Fatalf("the newest line is not kept: next %d", next)
	}
}
