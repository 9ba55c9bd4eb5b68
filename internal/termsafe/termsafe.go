// Package termsafe makes text a guest wrote safe to print on the user's
// terminal: a guest's console (`banger vm logs`), the output lines of an
// operation (a build script, a boot's console tail) and error messages that
// quote an engine's log.
//
// What it trusts: nothing in the text. Terminal control — ESC (the start of
// every CSI, OSC such as the OSC 52 clipboard write, DCS …), the other C0
// controls except newline, tab and carriage return, DEL, the C1 controls
// U+0080–U+009F (U+009B is a one-character CSI) and bytes that are not
// UTF-8 (an 8-bit terminal reads a lone 0x9b as CSI) — is shown as a
// visible escape (`\x1b`, `\u009b`, `\xff`). Printable UTF-8 passes
// unchanged. The CLI applies it only when the output is a terminal; a pipe
// or file gets the bytes as written, and `--raw` asks for them on a
// terminal too.
package termsafe

import (
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether w is a terminal (an *os.File on a tty).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// String returns s with its terminal control neutralised.
func String(s string) string {
	return string(appendSafe(nil, []byte(s), true))
}

// appendSafe appends p to dst with every control escaped and returns it
// with the number of bytes of p consumed. With final false an incomplete
// UTF-8 sequence at the end of p is left unconsumed for the next write.
func appendSafe(dst, p []byte, final bool) []byte {
	out, _ := appendSafeN(dst, p, final)
	return out
}

func appendSafeN(dst, p []byte, final bool) ([]byte, int) {
	i := 0
	for i < len(p) {
		c := p[i]
		if c >= 0x20 && c < 0x7f || c == '\n' || c == '\t' || c == '\r' {
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			if !final && !utf8.FullRune(p[i:]) {
				return dst, i // the rest of this rune comes with the next write
			}
			dst = fmt.Appendf(dst, `\x%02x`, c)
			size = 1
		case r < 0x20 || r == 0x7f:
			dst = fmt.Appendf(dst, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		default:
			dst = append(dst, p[i:i+size]...)
		}
		i += size
	}
	return dst, i
}

// Writer neutralises what is written through it before passing it on. A
// UTF-8 sequence split across writes is held back (at most 3 bytes) until
// it completes; Flush writes what is held.
type Writer struct {
	w       io.Writer
	pending []byte
	buf     []byte
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write neutralises p and writes it; it reports p as written in full when
// the underlying write succeeds.
func (t *Writer) Write(p []byte) (int, error) {
	in := p
	if len(t.pending) > 0 {
		in = append(t.pending, p...)
	}
	out, n := appendSafeN(t.buf[:0], in, false)
	t.pending = append(t.pending[:0:0], in[n:]...)
	t.buf = out
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	if f, ok := t.w.(interface{ Flush() }); ok {
		f.Flush()
	}
	return len(p), nil
}

// Flush writes a held incomplete sequence, escaped.
func (t *Writer) Flush() error {
	if len(t.pending) == 0 {
		return nil
	}
	out := appendSafe(nil, t.pending, true)
	t.pending = nil
	_, err := t.w.Write(out)
	return err
}
