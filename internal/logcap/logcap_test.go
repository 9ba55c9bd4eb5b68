package logcap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCapKeepsAppending: an appending writer that keeps its descriptor
// writes at the start of the capped file, with no hole; the older bytes'
// end is in ".1".
func TestCapKeepsAppending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.WriteString(strings.Repeat("a", 1000) + "end of old\n")
	if rotated, err := Cap(path, 2000); rotated || err != nil {
		t.Fatalf("under the cap: rotated %v, %v", rotated, err)
	}
	if rotated, err := Cap(path, 100); !rotated || err != nil {
		t.Fatalf("over the cap: rotated %v, %v", rotated, err)
	}
	w.WriteString("new\n")
	if b, _ := os.ReadFile(path); string(b) != "new\n" {
		t.Errorf("after the cap the file holds %q", b)
	}
	if b, _ := os.ReadFile(path + Rotated); len(b) != 100 || !strings.HasSuffix(string(b), "end of old\n") {
		t.Errorf(".1 holds %d bytes: %q", len(b), b)
	}
	if rotated, err := Cap(filepath.Join(t.TempDir(), "missing"), 1); rotated || err != nil {
		t.Errorf("missing file: %v %v", rotated, err)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	os.WriteFile(path, []byte("one\ntwo\nthree\nfour\n"), 0o600)
	if got := Tail(path, 2, 1<<10); got != "three\nfour" {
		t.Errorf("last 2 lines = %q", got)
	}
	if got := Tail(path, 10, 12); got != "three\nfour" { // the window starts inside "two"
		t.Errorf("last 12 bytes = %q", got)
	}
	if got := Tail(filepath.Join(t.TempDir(), "none"), 1, 1); !strings.HasPrefix(got, "(") {
		t.Errorf("missing file = %q", got)
	}
}

func TestWriterRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build.log")
	w, err := OpenWriter(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"12345\n", "678\n", "abc\n", strings.Repeat("x", 50)} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("write %q: %d %v", s, n, err)
		}
	}
	w.Close()
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + Rotated)
	if string(cur) != "xxxxxxxxxx" || string(old) != "abc\n" {
		t.Errorf("file %q, .1 %q", cur, old)
	}
}
