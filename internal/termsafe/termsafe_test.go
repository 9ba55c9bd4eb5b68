package termsafe

import (
	"bytes"
	"testing"
)

func TestString(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text\n", "plain text\n"},
		{"tab\tcr\r\n", "tab\tcr\r\n"},
		{"é ✓ 日本", "é ✓ 日本"},
		{"\x1b]52;c;aGk=\a", `\x1b]52;c;aGk=\x07`},
		{"\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"\u009b31m", `\u009b31m`},
		{"\x9b31m", `\x9b31m`},
		{"\x00\x7f\x08", `\x00\x7f\x08`},
		{"\xff\xfe", `\xff\xfe`},
	} {
		if got := String(c.in); got != c.want {
			t.Errorf("String(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestWriterSplitRunes: a rune split across writes passes unchanged, an
// escape split across writes is still escaped, and a dangling partial
// sequence is escaped at Flush.
func TestWriterSplitRunes(t *testing.T) {
	in := []byte("a✓b\u009bc\x1b[1m")
	for split := 0; split <= len(in); split++ {
		var out bytes.Buffer
		w := NewWriter(&out)
		w.Write(in[:split])
		w.Write(in[split:])
		w.Flush()
		if want := `a✓b\u009bc\x1b[1m`; out.String() != want {
			t.Errorf("split at %d: %q, want %q", split, out.String(), want)
		}
	}
	var out bytes.Buffer
	w := NewWriter(&out)
	w.Write([]byte("x\xe2\x9c"))
	w.Flush()
	if out.String() != `x\xe2\x9c` {
		t.Errorf("dangling partial rune = %q", out.String())
	}
}
