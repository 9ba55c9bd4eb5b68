package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/progress"
)

// TestAttackBuildLogFlood: a build script prints 48 MiB (lines of 1 KiB and
// one line of 1 MiB). build.log stays under build_log_max (here 16 MiB, the
// default) with one rotated copy, and the tail kept for the error message
// stays small.
func TestAttackBuildLogFlood(t *testing.T) {
	path := filepath.Join(t.TempDir(), BuildLogFile)
	blog, err := NewBuildLog(path, progress.Nop{}, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	blog.Line(strings.Repeat("L", 1<<20))
	line := strings.Repeat("x", 1023)
	for i := 0; i < 48<<10; i++ {
		blog.Line(line)
	}
	blog.Close()
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > 16<<20 {
			if err == nil {
				t.Fatalf("%s holds %d MiB, want at most 16 MiB", p, fi.Size()>>20)
			}
			t.Fatalf("%s: %v, want at most 16 MiB", p, err)
		}
	}
	blog.Line(strings.Repeat("T", 1<<20))
	if n := len(blog.Tail()); n > 16<<10 {
		t.Errorf("the build log's tail holds %d bytes, want <= 16 KiB", n)
	}
}
