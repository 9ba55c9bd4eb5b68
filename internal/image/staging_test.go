package image_test

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/image"
	"banger/internal/progress"
)

func TestBuildLogWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), image.BuildLogFile)
	rec := &progress.Recorder{}
	l, err := image.NewBuildLog(path, rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := l.Writer()
	io.WriteString(w, "one\r\ntw")
	io.WriteString(w, "o\nlast")
	w.Close()
	long := strings.Repeat("x", 70<<10)
	w = l.Writer()
	io.WriteString(w, long)
	w.Close()
	l.Close()
	if want := []string{"one", "two", "last", long}; !slices.Equal(rec.Lines, want) {
		t.Errorf("lines = %.40q, want %.40q", rec.Lines, want)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "one\ntwo\nlast\n") {
		t.Errorf("build.log = %.40q", b)
	}
}
