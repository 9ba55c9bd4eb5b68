package logcap

import (
	"io"
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

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r    io.ReaderAt
	read int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.read += int64(n)
	return n, err
}

func TestTailStart(t *testing.T) {
	for _, tt := range []struct {
		name, text string
		n          int
		max        int64
		want       string // the text from the offset
	}{
		{"last two", "a\nb\nc\n", 2, 1 << 20, "b\nc\n"},
		{"no final newline", "a\nb\nc", 2, 1 << 20, "b\nc"},
		{"more than there are", "a\nb\n", 5, 1 << 20, "a\nb\n"},
		{"zero", "a\nb\n", 0, 1 << 20, ""},
		{"empty", "", 3, 1 << 20, ""},
		{"window cuts a line", "aaaa\nbbbb\ncccc\n", 3, 8, "cccc\n"},
		{"window inside one line", "xxxxxxxxxxxx\n", 3, 4, "xxx\n"},
	} {
		r := strings.NewReader(tt.text)
		off, err := TailStart(r, int64(len(tt.text)), tt.n, tt.max)
		if err != nil || tt.text[off:] != tt.want {
			t.Errorf("%s: from %d = %q (%v), want %q", tt.name, off, tt.text[min(off, int64(len(tt.text))):], err, tt.want)
		}
	}
}

// The last lines of a 1 GiB log are found by reading its end only.
func TestTailStartReadsOnlyTheEnd(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "serial.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 1 << 30
	f.Truncate(size) // sparse
	tail := strings.Repeat("line of output\n", 50)
	f.WriteAt([]byte(tail), size)
	c := &countingReaderAt{r: f}
	off, err := TailStart(c, size+int64(len(tail)), 10, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if off != size+40*15 {
		t.Fatalf("offset %d, want %d", off, size+40*15)
	}
	if c.read > 64<<10 {
		t.Fatalf("read %d bytes of a 1 GiB log for 10 lines, want <= 64 KiB", c.read)
	}
}
